"""The custom op the plugin teaches fxq: a learned per-channel scale (LayerScale in ConvNeXt and CaiT), written
as a torch library op so tracing keeps it whole, and registered as an fxq concept so patterns can name it."""

from __future__ import annotations

import torch

from fxq.ops import Concept, register_concept


@torch.library.custom_op("fxq_example::channel_scale", mutates_args=())
def channel_scale(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``x`` with channel ``c`` (dimension 1) multiplied by ``gamma[c]``."""
    return x * gamma.view([1, -1] + [1] * (x.dim() - 2))


@channel_scale.register_fake
def _(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


register_concept(Concept("channel_scale", aten=("fxq_example.channel_scale",)))
