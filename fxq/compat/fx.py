"""torch.ao's FX-mode entry points on fxq's pipeline.

``prepare_fx``/``prepare_qat_fx`` prepare for the quantized engine torch is set to (``torch.backends.quantized
.engine``: "qnnpack" gives qnnpack, anything else x86), so ``convert_fx`` gives int8 kernels as torch.ao's does;
``convert_to_reference_fx`` gives fxq's reference graph (explicit quantize/dequantize around float ops). The
pipeline is torch.ao's (``recipe="none"``), so a script whose import line changed gets the model torch.ao made
(42-44 dB apart on x86, identical on qnnpack); ``recipe="auto"`` adds fxq's corrections (bias correction for
CNNs, float residual adds in transformers), as ``fxq.prepare`` does by default. Custom configs are torch.ao's dict form, torch.ao's
objects, or ``PrepareCustomConfig`` here; options fxq has no counterpart for are errors naming them.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn
from torch.fx import GraphModule

import fxq
from fxq.backends import native_backend
from fxq.errors import ConfigError
from fxq.graph_pass import PassContext, add_properties
from fxq.pass_manager import PassManager
from fxq.qconfig_mapping import QConfigMapping
from fxq.tracing import trace

_PRESERVED_KEY = "fxq_preserved_attributes"


class PrepareCustomConfig:
    """The options of torch.ao's PrepareCustomConfig that fxq takes: modules to keep whole (by name or class,
    not traced, left float if unknown) and attributes to carry onto the prepared and converted models."""

    def __init__(self) -> None:
        self.non_traceable_module_names: list[str] = []
        self.non_traceable_module_classes: list[type] = []
        self.preserved_attributes: list[str] = []

    def set_non_traceable_module_names(self, names: list[str]) -> PrepareCustomConfig:
        self.non_traceable_module_names = list(names)
        return self

    def set_non_traceable_module_classes(self, classes: list[type]) -> PrepareCustomConfig:
        self.non_traceable_module_classes = list(classes)
        return self

    def set_preserved_attributes(self, attributes: list[str]) -> PrepareCustomConfig:
        self.preserved_attributes = list(attributes)
        return self

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> PrepareCustomConfig:
        """torch.ao's dict form: "non_traceable_module_name", "non_traceable_module_class",
        "preserved_attributes"."""
        known = {"non_traceable_module_name": cls.set_non_traceable_module_names,
                 "non_traceable_module_class": cls.set_non_traceable_module_classes,
                 "preserved_attributes": cls.set_preserved_attributes}
        unknown = sorted(set(spec) - set(known))
        if unknown:
            raise ConfigError(f"prepare_custom_config has {', '.join(unknown)}, which fxq does not take; it takes "
                              f"{', '.join(known)} (standalone and custom modules: keep them whole with "
                              "non_traceable_module_name, or quantize them separately)")
        config = cls()
        for key, value in spec.items():
            known[key](config, value)
        return config


def prepare_fx(model: nn.Module, qconfig_mapping, example_inputs, prepare_custom_config=None,
               backend_config=None, **fxq_options) -> GraphModule:
    """torch.ao's ``prepare_fx``: ``fxq.prepare`` for torch's quantized engine (see the module docstring).
    ``fxq_options`` go to ``fxq.prepare`` as they are (``recipe="auto"`` for fxq's corrections, ``capture="auto"``
    ...)."""
    return _prepare(fxq.prepare, model, qconfig_mapping, example_inputs, prepare_custom_config, backend_config,
                    fxq_options)


def prepare_qat_fx(model: nn.Module, qconfig_mapping, example_inputs, prepare_custom_config=None,
                   backend_config=None, **fxq_options) -> GraphModule:
    """torch.ao's ``prepare_qat_fx``: ``fxq.prepare_qat`` for torch's quantized engine (``fxq_options`` as for
    ``prepare_fx``)."""
    return _prepare(fxq.prepare_qat, model, qconfig_mapping, example_inputs, prepare_custom_config, backend_config,
                    fxq_options)


def _prepare(entry, model, qconfig_mapping, example_inputs, custom, backend_config, fxq_options) -> GraphModule:
    if backend_config is not None:
        raise ConfigError("backend_config: fxq's backends are its own tables (fxq.backends); drop the argument to "
                          "use torch's current quantized engine, or register a backend (docs/architecture.md)")
    config = _custom_config(custom)
    fxq_options = {"recipe": "none", "capture": "fx", **fxq_options}  # torch.ao's pipeline and front end
    prepared = entry(model, qconfig_mapping, example_inputs, backend=native_backend(),
                     leaf_modules=config.non_traceable_module_names,
                     leaf_module_types=config.non_traceable_module_classes, **fxq_options)
    _preserve(model, prepared, config.preserved_attributes)
    return prepared


def convert_fx(graph_module: GraphModule, convert_custom_config=None, _remove_qconfig: bool = True,
               qconfig_mapping=None, backend_config=None) -> GraphModule:
    """torch.ao's ``convert_fx``: ``fxq.convert`` (int8 kernels of the backend prepare chose)."""
    return _convert(graph_module, None, convert_custom_config, qconfig_mapping, backend_config)


def convert_to_reference_fx(graph_module: GraphModule, convert_custom_config=None, _remove_qconfig: bool = True,
                            qconfig_mapping=None, backend_config=None) -> GraphModule:
    """torch.ao's ``convert_to_reference_fx``: fxq's reference graph (quantize/dequantize around float ops)."""
    return _convert(graph_module, "reference", convert_custom_config, qconfig_mapping, backend_config)


def _convert(graph_module, backend, custom, qconfig_mapping, backend_config) -> GraphModule:
    if qconfig_mapping is not None:
        raise ConfigError("convert_fx(qconfig_mapping=...): fxq decides what is quantized at prepare; pass the "
                          "mapping to prepare_fx instead")
    if backend_config is not None or custom:
        raise ConfigError("convert_fx takes no backend_config or convert_custom_config in fxq: the backend is the "
                          "one prepare_fx chose")
    converted = fxq.convert(graph_module, backend=backend)
    _preserve(graph_module, converted, graph_module.meta.get(_PRESERVED_KEY, ()))
    return converted


def fuse_fx(model: nn.Module, fuse_custom_config=None, backend_config=None) -> GraphModule:
    """torch.ao's ``fuse_fx``: the traced float model with fxq's fusions (conv/linear + batch norm folded, +
    ReLU as one module), for inspection; ``prepare_fx`` fuses by itself."""
    config = _custom_config(fuse_custom_config)
    if backend_config is not None:
        raise ConfigError("backend_config: fxq fuses by its own patterns; drop the argument")
    captured = trace(copy.deepcopy(model), leaf_modules=config.non_traceable_module_names,
                     leaf_module_types=config.non_traceable_module_classes)  # fusing folds weights: a copy
    context = PassContext(qconfig_mapping=QConfigMapping(), backend=native_backend(), example_inputs=(),
                          original=model, training=model.training)
    add_properties(captured.graph_module, frozenset({"traced"}))
    fused = PassManager(["normalize", "fuse"]).run(captured.graph_module, context).graph_module
    _preserve(model, fused, config.preserved_attributes)
    return fused


def _custom_config(custom) -> PrepareCustomConfig:
    if custom is None:
        return PrepareCustomConfig()
    if isinstance(custom, PrepareCustomConfig):
        return custom
    if isinstance(custom, dict):
        return PrepareCustomConfig.from_dict(custom)
    if hasattr(custom, "to_dict"):  # torch.ao's PrepareCustomConfig / FuseCustomConfig
        return PrepareCustomConfig.from_dict({key: value for key, value in custom.to_dict().items() if value})
    raise ConfigError(f"prepare_custom_config must be a dict or a PrepareCustomConfig, got {type(custom).__name__}")


def _preserve(source: nn.Module, target: GraphModule, names) -> None:
    for name in names:
        if not hasattr(source, name):
            raise ConfigError(f"preserved_attributes names {name!r}, which {type(source).__name__} does not have")
        setattr(target, name, getattr(source, name))
    target.meta[_PRESERVED_KEY] = tuple(names)
