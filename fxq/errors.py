"""The errors fxq raises.

Every error names what it is about (a module path, a graph node, a pass) and says what to do, so a user can
act on it without reading fxq's source. All derive from `FxqError`, so one `except` catches them all.
"""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when empty): torch appends graph dumps and
    tooling hints that the chained original keeps anyway."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class FxqError(Exception):
    """Base class of every error fxq raises on bad input or an impossible request."""


class TraceError(FxqError):
    """The model (or one of its submodules) could not be captured as a graph."""


class ConfigError(FxqError):
    """A QConfig, QConfigMapping rule, backend name or option is invalid for this model."""


class CalibrationError(FxqError):
    """Calibration saw data that cannot be quantized (NaN/Inf), or an observer saw no data at all."""


class PassOrderError(FxqError):
    """A pipeline lists a pass before the passes that provide what it requires."""


class PassError(FxqError):
    """A pass failed while running; the message names the pass, the node and the passes before it."""


class InputError(FxqError):
    """A converted model was called with inputs it cannot take: the wrong number of arguments, or a tensor of
    another dtype, rank, device or size than the example inputs given to prepare. The original error is chained."""


class LoadError(ConfigError):
    """``fxq.load`` got a missing, damaged or foreign file. A ConfigError, as the refusals of plain torch.save files
    and newer formats always were, so existing handlers keep catching them."""


class FxqWarning(UserWarning):
    """A warning about something fxq did on the user's behalf (e.g. evaluating a training-mode model)."""
