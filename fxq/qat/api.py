"""``fxq.prepare_qat``: a trainable copy of the model that rounds as the converted model will, and the switches
of the usual schedule (observe a few epochs, freeze the ranges, freeze batch-norm statistics)."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn
from torch.fx import GraphModule

from fxq.precision import PrecisionPlan
from fxq.qat.batch_norm import FreezableBatchNorm
from fxq.qat.fake_quantize import FakeQuantize, WeightFakeQuantize
from fxq.recipes import Recipe


def prepare_qat(model: nn.Module, qconfig_mapping=None, example_inputs=None, *, backend: str | None = None,
                leaf_modules: Iterable[str] = (), leaf_module_types: Iterable[type] = (),
                concrete_args: dict | None = None, keep_snapshots: bool = False, capture: str = "auto",
                recipe: str | Recipe = "auto", precision: PrecisionPlan | dict | None = None,
                passes=None) -> GraphModule:
    """A copy of ``model`` with fake quantization where ``fxq.prepare`` would put observers, in training mode.

    Train it as the float model (the same loss and optimizer over ``prepared.parameters()``), then
    ``fxq.convert(prepared)`` gives the int8 model on the same kernels as post-training quantization, with
    batch-norm statistics measured again on the last training batches (``reestimate_bn_stats``). The user's
    model and its parameters are never touched (``requires_grad`` flags are copied as they are); the prepared
    model deep-copies and pickles.

    Args:
        qconfig_mapping: None for ``fxq.get_default_qat_qconfig_mapping(backend)``. Any mapping serves: its
            observers are wrapped in ``FakeQuantize``, whose per-tensor scales are learned from the observer's
            first range narrowed to the least error; bit widths below 8 come from quant_min/quant_max as for PTQ.
        example_inputs / backend / capture / recipe / precision / passes / ...: as for ``fxq.prepare``. The recipe keeps
            its float decisions but not its calibration-statistics corrections (bias correction), which
            training makes unnecessary.
    Raises:
        ConfigError, TraceError: as ``fxq.prepare``.
    """
    from fxq.api import _prepare
    from fxq.backends import native_backend, qconfig_family
    from fxq.qconfig_mapping import get_default_qat_qconfig_mapping

    backend = backend if backend is not None else native_backend()
    if qconfig_mapping is None:
        qconfig_mapping = get_default_qat_qconfig_mapping(qconfig_family(backend))
    return _prepare(model, qconfig_mapping, example_inputs, backend=backend, leaf_modules=leaf_modules,
                    leaf_module_types=leaf_module_types, concrete_args=concrete_args, keep_snapshots=keep_snapshots,
                    capture=capture, recipe=recipe, precision=precision, passes=passes, training=True)


def freeze_observers(prepared: nn.Module, frozen: bool = True) -> nn.Module:
    """Stop (or restart) updating the activation ranges of quantizers that follow their observer
    (``learn_scale=False``, per-channel); fake quantization goes on with the last ones. Learned scales observe
    only their first batch and are frozen by leaving them out of the optimizer."""
    for module in prepared.modules():
        if isinstance(module, FakeQuantize):
            module.observing.fill_(not frozen)
    return prepared


def enable_fake_quant(prepared: nn.Module, enabled: bool = True) -> nn.Module:
    """Turn rounding on or off for activations and weights (off: the float model, still observing)."""
    for module in prepared.modules():
        if isinstance(module, (FakeQuantize, WeightFakeQuantize)):
            module.fake_quantizing.fill_(enabled)
    return prepared


def freeze_bn_stats(prepared: nn.Module, frozen: bool = True) -> nn.Module:
    """Normalise with the batch norms' running statistics and stop updating them (or, ``frozen=False``, go back
    to batch statistics), in training mode too: from then on training sees what the converted model computes.
    Lasts through ``prepared.train()``."""
    for module in prepared.modules():
        if isinstance(module, FreezableBatchNorm):
            module.stats_frozen.fill_(frozen)
    return prepared
