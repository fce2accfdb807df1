"""The observer contract: watch float tensors during calibration, then turn what was seen into qparams.

Observers are modules (so they live in the prepared graph, deep-copy and round-trip through ``state_dict``)
whose ``forward`` returns its input unchanged. Each knows the graph node it watches (``node_name``, set by the
pass that inserts it), so every error it raises can say where the bad data came from.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from fxq.errors import CalibrationError, ConfigError
from fxq.qparams import FLOAT32_EPS, check_symmetric_range, compute_qparams, qrange


class ObserverFactory:
    """A picklable, comparable recipe for observers (what ``Observer.with_args`` returns). QConfigs hold
    these, because every op a QConfig applies to needs observers of its own."""

    def __init__(self, cls: type[Observer], kwargs: dict[str, Any]) -> None:
        self.cls, self.kwargs = cls, dict(kwargs)
        _check_arguments(cls, self.kwargs)

    def __call__(self, **more: Any) -> Observer:
        return self.cls(**{**self.kwargs, **more})

    def with_args(self, **more: Any) -> ObserverFactory:
        return ObserverFactory(self.cls, {**self.kwargs, **more})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObserverFactory) and (self.cls, self.kwargs) == (other.cls, other.kwargs)

    def __hash__(self) -> int:
        return hash((self.cls, tuple(sorted((key, repr(value)) for key, value in self.kwargs.items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={_short(value)}" for key, value in sorted(self.kwargs.items()))
        return f"{self.cls.__name__}.with_args({args})"


def _check_arguments(cls: type[Observer], kwargs: dict[str, Any]) -> None:
    """Fail where the factory is written, not when prepare or convert first builds an observer: unknown options
    (with fxq's spelling of torch.ao's), and, once every required option is given, any setting the observer
    refuses (it is built once, here, to ask it)."""
    parameters = observer_parameters(cls)
    unknown = sorted(set(kwargs) - set(parameters))
    if unknown:
        raise ConfigError(f"{cls.__name__}.with_args got {', '.join(unknown)}, which {cls.__name__} does not take"
                          f"{_torch_ao_hint(cls, kwargs)}; it takes {', '.join(sorted(parameters))}")
    if all(name in kwargs for name, required in parameters.items() if required):
        try:
            cls(**kwargs)
        except ConfigError as err:
            settings = ", ".join(f"{key}={_short(value)}" for key, value in sorted(kwargs.items()))
            raise ConfigError(f"{cls.__name__}.with_args({settings}): {err}") from err


def observer_parameters(cls: type[Observer]) -> dict[str, bool]:
    """Keyword name -> required, over the ``__init__`` of ``cls`` and of the classes it passes ``**kwargs`` on to."""
    parameters: dict[str, bool] = {}
    for klass in cls.__mro__:
        if klass is nn.Module:
            break
        if "__init__" not in vars(klass):
            continue
        signature = inspect.signature(vars(klass)["__init__"])
        for name, parameter in signature.parameters.items():
            if name != "self" and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                parameters.setdefault(name, parameter.default is parameter.empty)
        if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            break
    return parameters


def _torch_ao_hint(cls: type[Observer], kwargs: dict[str, Any]) -> str:
    """fxq's spelling of torch.ao's ``qscheme`` (a flag plus, for per-channel schemes, another class)."""
    scheme = kwargs.get("qscheme")
    if scheme is None:
        return ""
    symmetric = scheme in (torch.per_tensor_symmetric, torch.per_channel_symmetric)
    per_channel = scheme in (torch.per_channel_affine, torch.per_channel_symmetric)
    name = cls.__name__
    if per_channel and not getattr(cls, "per_channel", False):
        name = "MovingAveragePerChannelMinMaxObserver" if "MovingAverage" in name else "PerChannelMinMaxObserver"
    if not per_channel and getattr(cls, "per_channel", False):
        name = "MovingAverageMinMaxObserver" if "MovingAverage" in name else "MinMaxObserver"
    return f" (qscheme is torch.ao's spelling: fxq's is {name}.with_args(symmetric={symmetric}, ...))"


def _short(value: Any) -> str:
    return str(value).replace("torch.", "") if isinstance(value, torch.dtype) else repr(value)


class Observer(nn.Module):
    """Base of fxq's observers; subclasses say how a batch is recorded and what range it implies.

    Args:
        dtype: the quantized dtype (torch.quint8, torch.qint8, torch.qint32, torch.quint4x2).
        symmetric: centre the range on 0 (zero point fixed) instead of affine.
        quant_min / quant_max: a custom quantized range (both or neither); it must include 0.
        reduce_range: use one bit less (x86 activations on CPUs without VNNI).
        eps: the smallest scale allowed.

    Raises:
        ConfigError: a range ``qrange`` rejects, or a symmetric scheme that cannot represent the data
            (reduce_range on quint8 would put the fixed zero point 128 outside [0, 127]; quint4x2 would put
            it at 0 and lose every negative value). torch.ao refuses the first too, and allows the second.
    """

    per_channel = False
    ch_axis: int | None = None
    # (low, high): record values clamped to these bounds (``observe-clamped``: the value's one reader clamps it)
    clamp_to: tuple[float, float] | None = None

    def __init__(self, dtype: torch.dtype = torch.quint8, symmetric: bool = False,
                 quant_min: int | None = None, quant_max: int | None = None, reduce_range: bool = False,
                 eps: float = FLOAT32_EPS) -> None:
        super().__init__()
        self.custom_range = quant_min is not None
        if symmetric and reduce_range and dtype == torch.quint8 and not self.custom_range:
            raise ConfigError("reduce_range is not supported with symmetric quint8 (the zero point is fixed "
                              "at 128); use affine, or qint8")
        if symmetric and dtype == torch.quint4x2:
            raise ConfigError("symmetric quint4x2 fixes the zero point at 0 and loses every negative value; "
                              "use affine")
        if not (isinstance(eps, (int, float)) and 0 < eps < float("inf")):
            raise ConfigError(f"eps is the smallest scale an observer may give and must be a positive number; got "
                              f"eps={eps!r}")
        self.dtype, self.symmetric, self.reduce_range, self.eps = dtype, symmetric, reduce_range, eps
        self.quant_min, self.quant_max = qrange(dtype, quant_min, quant_max, reduce_range)
        if symmetric:
            check_symmetric_range(dtype, self.quant_min, self.quant_max)
        self.node_name = "<unnamed>"

    @classmethod
    def with_args(cls, **kwargs: Any) -> ObserverFactory:
        """A picklable factory making this observer with ``kwargs`` (later keywords override them)."""
        return ObserverFactory(cls, kwargs)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Record ``x``'s statistics and return ``x`` itself. ``valid``: a bool mask over ``x``'s leading
        dimensions (a batch's real tokens, padding False), so only those positions are recorded; ignored when the
        shapes do not line up (a value laid out per head) and by per-channel observers."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            what = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise ConfigError(f"observer of node {self.node_name!r} got a {what} value; observers only watch "
                              "float tensors (was this value float for the example inputs given to prepare?)")
        seen = x
        if valid is not None and not self.per_channel and x.shape[:valid.dim()] == valid.shape and valid.any():
            seen = x[valid]
        if self.clamp_to is not None:
            seen = seen.clamp(*self.clamp_to)
        if seen.numel():
            self._observe(seen.detach())
        return x

    def _observe(self, x: torch.Tensor) -> None:
        """Record a non-empty float batch."""
        raise NotImplementedError

    def _check_finite(self, low: torch.Tensor, high: torch.Tensor) -> None:
        """NaN or Inf anywhere in a batch shows up in its min or max, so checking those is enough; so do values
        only a mask holds (finfo.min is finite, and would make the range useless)."""
        if torch.isfinite(low).all() and torch.isfinite(high).all() and \
                max(float(low.abs().max()), float(high.abs().max())) >= 1e30:
            raise CalibrationError(
                f"calibration data reaching node {self.node_name!r} holds values of magnitude "
                f"{max(float(low.abs().max()), float(high.abs().max())):.3g}: an additive mask (finfo.min) rather "
                "than an activation. Keep that op float with QConfigMapping.set_module_name(..., None), or give "
                "prepare example inputs that exercise the mask (padded ones) so fxq leaves it float itself")
        if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
            raise CalibrationError(
                f"calibration data reaching node {self.node_name!r} contains NaN or Inf "
                f"(min {low.min().item()}, max {high.max().item()}); check the calibration inputs and the "
                f"ops that compute {self.node_name!r} (run the float model on the same batch), or keep that "
                "op float with QConfigMapping.set_module_name(..., None)")

    @property
    def has_data(self) -> bool:
        """Whether calibration has shown this observer any data."""
        raise NotImplementedError

    def observed_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (min, max) the qparams are computed from; only meaningful when ``has_data``."""
        raise NotImplementedError

    def seen_range(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The raw (min, max) calibration showed (per channel if per-channel), or None if it showed nothing or
        the observer keeps no range (fixed qparams). ``observed_range`` may be narrower (a histogram clips)."""
        low, high = getattr(self, "min_val", None), getattr(self, "max_val", None)
        if low is None or high is None or not self.has_data:
            return None
        return low, high

    def _require_data(self) -> None:
        if not self.has_data:
            raise CalibrationError(f"observer of node {self.node_name!r} saw no data; run calibration data "
                                   "through the prepared model before convert (and check that it reaches "
                                   "this node)")

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale float32, zero_point int64) for what was observed: shape [1] per tensor, [C] per channel.

        Raises:
            CalibrationError: nothing was observed.
        """
        self._require_data()
        low, high = self.observed_range()
        return compute_qparams(low, high, self.quant_min, self.quant_max, self.dtype, self.symmetric,
                               self.eps, custom_range=self.custom_range)

    def merge(self, other: Observer) -> None:
        """Fold ``other``'s statistics into this observer, so calibration can be split across processes.

        Raises:
            ConfigError: ``other`` is of another class or has other settings.
        """
        if type(other) is not type(self) or self._settings() != other._settings():
            raise ConfigError(f"cannot merge {type(other).__name__}({other._settings()}) into "
                              f"{type(self).__name__}({self._settings()}) for node {self.node_name!r}")
        if other.has_data:
            self._merge(other)

    def _merge(self, other: Observer) -> None:
        """Fold in ``other``, which has the same class and settings and has seen data."""
        raise NotImplementedError

    def _settings(self) -> dict[str, Any]:
        """What two observers must share to be merged."""
        return {"dtype": self.dtype, "symmetric": self.symmetric, "quant_min": self.quant_min,
                "quant_max": self.quant_max, "custom_range": self.custom_range, "eps": self.eps,
                "ch_axis": self.ch_axis, "clamp_to": self.clamp_to}

    def extra_repr(self) -> str:
        scheme = "symmetric" if self.symmetric else "affine"
        text = f"dtype={_short(self.dtype)}, {scheme}, range=[{self.quant_min}, {self.quant_max}]"
        text += f", ch_axis={self.ch_axis}" if self.per_channel else ""
        return text + (f", clamp_to={self.clamp_to}" if self.clamp_to is not None else "")

    @staticmethod
    def _seen_text(low: torch.Tensor, high: torch.Tensor) -> str:
        """``min=..., max=...`` of a recorded range (over all channels), for ``extra_repr``."""
        channels = f", channels={low.numel()}" if low.dim() else ""
        return f"{channels}, min={low.min().item():.4g}, max={high.max().item():.4g}"
