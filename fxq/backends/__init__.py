"""Backends by name. A backend is a table plus rewrite rules (see ``fxq.backends.table``): fxq's own, those
``register_backend`` adds, and those other packages declare in the ``fxq.backends`` entry point group (each a
``Backend`` object, checked when loaded: a malformed one is an error naming its plugin)."""

from __future__ import annotations

from fxq.backends.qnnpack import QNNPACK
from fxq.backends.reference import REFERENCE
from fxq.backends.table import Backend, Observation, OpSupport, check_backend
from fxq.backends.x86 import X86
from fxq.errors import ConfigError
from fxq.plugins import load_group

_BACKENDS: dict[str, Backend] = {"reference": REFERENCE, "x86": X86, "qnnpack": QNNPACK}
_ALIASES = {"fbgemm": "x86"}


def register_backend(backend: Backend) -> Backend:
    """Make ``backend`` available by its name, after checking its table and rules; a name already taken (or
    an alias such as "fbgemm") is an error."""
    check_backend(backend)
    taken = _BACKENDS.get(_ALIASES.get(backend.name, backend.name))
    if taken is not None and taken is not backend:
        raise ConfigError(f"backend name {backend.name!r} is already taken; choose another name")
    _BACKENDS[backend.name] = backend
    return backend


def available_backends() -> list[str]:
    """Every backend name: built-in, registered and from plugins."""
    load_group("fxq.backends", register_backend)
    return sorted(_BACKENDS)


def native_backend() -> str:
    """The backend whose int8 kernels this machine's torch runs: "qnnpack" when torch's quantized engine is
    qnnpack (ARM builds, or set by the user), else "x86" (fbgemm / x86 engines). The default of ``prepare``,
    ``quantize`` and ``prepare_qat``."""
    import torch

    return "qnnpack" if torch.backends.quantized.engine == "qnnpack" else "x86"


def qconfig_family(name: str | Backend) -> str:
    """The built-in backend whose default qconfigs suit ``name``: itself for fxq's own, else the one running
    the same quantized engine (a plugin backend on fbgemm kernels gets x86's 7-bit weights)."""
    if isinstance(name, str) and name in ("x86", "fbgemm", "qnnpack", "reference"):
        return "x86" if name == "fbgemm" else name
    engine = get_backend(name).engine
    return "reference" if engine is None else "qnnpack" if engine == "qnnpack" else "x86"


def get_backend(name: str | Backend) -> Backend:
    """The backend called ``name`` (or ``name`` itself if it is a Backend)."""
    if isinstance(name, Backend):
        return name
    load_group("fxq.backends", register_backend)
    key = _ALIASES.get(name, name)
    if key not in _BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; available: {', '.join(sorted(_BACKENDS))}")
    return _BACKENDS[key]


__all__ = ["Backend", "Observation", "OpSupport", "available_backends", "get_backend", "native_backend",
           "qconfig_family", "register_backend"]
