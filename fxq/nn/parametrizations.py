"""Weight parametrizations (``torch.nn.utils.parametrizations.weight_norm``, ``spectral_norm``, or any
``torch.nn.utils.parametrize`` registration) baked into plain weights before quantizing.

A parametrized layer computes its weight on every call (weight norm: g * v / ||v||). torch.fx keeps such a module
whole, as a float leaf, and torch.export records the weight's computation as graph ops, so the conv or linear
reading it has no constant weight to quantize; ``quantize_dynamic`` matches types exactly and skipped them. For
inference the reparametrization is only a way of training: the weight it computes in eval mode (where spectral
norm's power iteration stands still) is the layer's weight, and quantization starts from it.

torch's ``remove_parametrizations`` is not used: it deletes the weight property from the parametrized class,
which a deep copy shares with the user's model, so the user's layers would lose their weights.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


def bake_parametrizations(model: nn.Module) -> list[str]:
    """Replace every parametrized tensor in ``model`` (changed in place: pass a copy) by the value its
    parametrization computes in eval mode, as a plain parameter of the module's original class; the baked
    tensors' paths ("conv.weight")."""
    baked = []
    for path, module in [(p, m) for p, m in model.named_modules() if parametrize.is_parametrized(m)]:
        parametrizations = module.parametrizations
        training = parametrizations.training
        parametrizations.eval()
        with torch.no_grad():
            values = {name: getattr(module, name).detach().clone() for name in parametrizations}
        parametrizations.train(training)
        trains = {name: any(p.requires_grad for p in parametrizations[name].parameters()) for name in values}
        del module._modules["parametrizations"]
        module.__class__ = module.__class__.__bases__[0]  # the class parametrize derived from, on this copy only
        for name, value in values.items():
            module.register_parameter(name, nn.Parameter(value, requires_grad=trains[name]))
            baked.append(f"{path}.{name}" if path else name)
    return baked
