"""torch.ao's eager-mode API on fxq's graph pipeline: ``QuantStub``/``DeQuantStub`` models, ``fuse_modules``,
and ``prepare``/``convert`` driven by ``qconfig`` attributes.

fxq quantizes graphs, so eager ``prepare`` captures the model (symbolic tracing, on the first calibration batch;
stubs are identities traced through) with a QConfigMapping built from its ``qconfig`` attributes: the root's is global, a submodule's covers
that submodule (None keeps it float). What gets quantized is then what fxq's backend table quantizes between
the stubs and outside them alike: fxq does not need stubs to know where int8 starts. The result is a
GraphModule, not the model changed in place (``inplace=True`` is refused rather than ignored).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

import fxq
from fxq.backends import native_backend
from fxq.errors import CalibrationError, ConfigError
from fxq.nn.fold import fold_batch_norm
from fxq.nn.fused import fused_with_relu, layer_bn_unit
from fxq.torch_ao_objects import translate_qconfig


class QuantStub(nn.Module):
    """torch.ao's marker where a float input becomes quantized: an identity to fxq (traced through)."""

    def __init__(self, qconfig=None) -> None:
        super().__init__()
        if qconfig is not None:
            self.qconfig = qconfig

    def forward(self, x):
        return x


class DeQuantStub(QuantStub):
    """torch.ao's marker where a quantized value returns to float: an identity to fxq (traced through)."""


class EagerPrepared(nn.Module):
    """What eager ``prepare`` returns: the model, captured and given observers by ``fxq.prepare`` on the first
    batch it is called with (eager mode has no example inputs; the first calibration batch serves), then
    calibrated by every call. ``convert`` it afterwards."""

    def __init__(self, model: nn.Module, mapping: fxq.QConfigMapping, backend: str) -> None:
        super().__init__()
        self.model, self.mapping, self.backend = model, mapping, backend
        self.prepared = None

    def forward(self, *args, **kwargs):
        if self.prepared is None:
            example = dict(kwargs) if kwargs and not args else args
            if kwargs and args:
                raise ConfigError("an eager-prepared model takes positional or keyword arguments, not both")
            self.prepared = fxq.prepare(self.model, self.mapping, example, backend=self.backend, recipe="none",
                                         capture="fx")
        return self.prepared(*args, **kwargs)


def prepare(model: nn.Module, inplace: bool = False, allow_list=None, observer_non_leaf_module_list=None,
            prepare_custom_config_dict=None) -> EagerPrepared:
    """torch.ao's eager ``prepare``: the model with the mapping its ``qconfig`` attributes describe, for torch's
    quantized engine; ``fxq.prepare`` runs on the first calibration batch (``EagerPrepared``).

    Raises:
        ConfigError: ``inplace=True``, options fxq has no counterpart for, or no ``qconfig`` anywhere.
    """
    _refuse_inplace("prepare", inplace)
    if allow_list is not None or observer_non_leaf_module_list is not None or prepare_custom_config_dict:
        raise ConfigError("prepare(): allow_list, observer_non_leaf_module_list and prepare_custom_config_dict "
                          "have no fxq counterpart; set qconfig attributes (None keeps a submodule float)")
    return EagerPrepared(model, qconfig_mapping_of(model), native_backend())


def convert(module: nn.Module, mapping=None, inplace: bool = False, remove_qconfig: bool = True,
            is_reference: bool = False, convert_custom_config_dict=None):
    """torch.ao's eager ``convert``: ``fxq.convert`` of what ``prepare`` returned, once calibrated (int8 kernels,
    or the reference graph with ``is_reference=True``).

    Raises:
        CalibrationError: the prepared model never ran on data.
    """
    _refuse_inplace("convert", inplace)
    if mapping is not None or convert_custom_config_dict:
        raise ConfigError("convert(): mapping and convert_custom_config_dict have no fxq counterpart (fxq's "
                          "backend table decides each op's kernel)")
    if isinstance(module, EagerPrepared):
        if module.prepared is None:
            raise CalibrationError("convert() got a prepared model that never ran: run calibration batches "
                                   "through it first")
        module = module.prepared
    return fxq.convert(module, backend="reference" if is_reference else None)


def quantize_dynamic(model: nn.Module, qconfig_spec=None, dtype: torch.dtype = torch.qint8, mapping=None,
                     inplace: bool = False):
    """torch.ao's ``quantize_dynamic``: ``fxq.quantize_dynamic``, with QConfigs in a spec dict read as the dtype
    of their weight (``default_dynamic_qconfig`` -> qint8, ``float16_dynamic_qconfig`` -> float16)."""
    if mapping is not None:
        raise ConfigError("quantize_dynamic(mapping=...): fxq swaps in its own runtime modules; drop the argument")
    if isinstance(qconfig_spec, dict):
        qconfig_spec = {key: _dynamic_dtype(value) for key, value in qconfig_spec.items()}
    return fxq.quantize_dynamic(model, qconfig_spec, dtype, inplace=inplace)


def _dynamic_dtype(value):
    if value is None or isinstance(value, torch.dtype) or not hasattr(value, "weight"):
        return value
    weight = translate_qconfig(value).weight
    return getattr(weight, "kwargs", {}).get("dtype", torch.qint8) if weight is not None else None


def qconfig_mapping_of(model: nn.Module) -> fxq.QConfigMapping:
    """The QConfigMapping that ``model``'s ``qconfig`` attributes describe (see the module docstring).

    Raises:
        ConfigError: no module of ``model`` has a ``qconfig`` attribute.
    """
    mapping = fxq.QConfigMapping()
    found = False
    for path, module in model.named_modules():
        if "qconfig" not in vars(module):
            continue
        found = True
        qconfig = translate_qconfig(module.qconfig)
        if path:
            mapping.set_module_name(path, qconfig)
        else:
            mapping.set_global(qconfig)
    if not found:
        raise ConfigError(f"{type(model).__name__} has no qconfig attribute: set model.qconfig = "
                          "fxq.compat.get_default_qconfig('x86') (or per submodule) before prepare()")
    return mapping


def fuse_modules(model: nn.Module, modules_to_fuse, inplace: bool = False, fuser_func=None,
                 fuse_custom_config_dict=None) -> nn.Module:
    """torch.ao's eager ``fuse_modules``: each list of submodule names (conv/linear + batch norm (+ ReLU), conv/
    linear/batch norm + ReLU) becomes one module at the first name, identities at the others. In eval mode a
    batch norm is folded into the layer; in training mode the layer and norm train as one unit (QAT).

    Raises:
        ConfigError: a name the model does not have, a sequence fxq has no fused form for, or a custom fuser.
    """
    if fuser_func is not None or fuse_custom_config_dict:
        raise ConfigError("fuse_modules(): fxq fuses by its own rules; fuser_func and fuse_custom_config_dict "
                          "have no counterpart")
    result = model if inplace else copy.deepcopy(model)
    groups = [modules_to_fuse] if modules_to_fuse and isinstance(modules_to_fuse[0], str) else modules_to_fuse
    for names in groups:
        modules = [_submodule(result, name) for name in names]
        _set(result, names[0], _fused(modules, names, result.training))
        for name in names[1:]:
            _set(result, name, nn.Identity())
    return result


def _fused(modules: list[nn.Module], names: list[str], training: bool) -> nn.Module:
    layer, *rest = modules
    relu = rest.pop() if rest and isinstance(rest[-1], nn.ReLU) else None
    if len(rest) == 1 and isinstance(rest[0], nn.modules.batchnorm._BatchNorm) and isinstance(layer, _LAYERS):
        if training:
            return layer_bn_unit(layer, rest[0], relu)
        layer, rest = fold_batch_norm(layer, rest[0]), []
        if relu is None:
            return layer
    fused = fused_with_relu(layer) if not rest and relu is not None else None
    if fused is None:
        kinds = " + ".join(type(module).__name__ for module in modules)
        raise ConfigError(f"fuse_modules cannot fuse {names} ({kinds}): fxq fuses Conv/Linear + BatchNorm "
                          "(+ ReLU), and Conv/Linear/BatchNorm2d/3d + ReLU")
    return fused(layer, relu)


_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _submodule(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        from fxq.qconfig_mapping import with_suggestion

        names = {path for path, _ in model.named_modules()}
        raise ConfigError(f"fuse_modules: {type(model).__name__} has no submodule "
                          f"{with_suggestion(name, names)}") from None


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def _refuse_inplace(entry: str, inplace: bool) -> None:
    if inplace:
        raise ConfigError(f"{entry}(inplace=True): fxq never changes the model it is given; use the model "
                          f"{entry}() returns")
