"""Backends by name. A backend is a table plus lowering rules (see ``fxq.backends.table``)."""

from __future__ import annotations

from fxq.backends.qnnpack import QNNPACK
from fxq.backends.reference import REFERENCE
from fxq.backends.table import Backend, Observation, OpSupport
from fxq.backends.x86 import X86
from fxq.errors import ConfigError

_BACKENDS: dict[str, Backend] = {"reference": REFERENCE, "x86": X86, "qnnpack": QNNPACK}
_ALIASES = {"fbgemm": "x86"}


def register_backend(backend: Backend) -> None:
    """Make ``backend`` available by its name; a name already taken is an error."""
    if backend.name in _BACKENDS and _BACKENDS[backend.name] is not backend:
        raise ConfigError(f"backend {backend.name!r} is already registered")
    _BACKENDS[backend.name] = backend


def native_backend() -> str:
    """The backend whose int8 kernels this machine's torch runs: "qnnpack" when torch's quantized engine is
    qnnpack (ARM builds, or set by the user), else "x86" (fbgemm / x86 engines). The default of ``prepare``,
    ``quantize`` and ``prepare_qat``."""
    import torch

    return "qnnpack" if torch.backends.quantized.engine == "qnnpack" else "x86"


def get_backend(name: str | Backend) -> Backend:
    """The backend called ``name`` (or ``name`` itself if it is a Backend)."""
    if isinstance(name, Backend):
        return name
    key = _ALIASES.get(name, name)
    if key not in _BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; available: {', '.join(sorted(_BACKENDS))}")
    return _BACKENDS[key]


__all__ = ["Backend", "Observation", "OpSupport", "get_backend", "native_backend", "register_backend"]
