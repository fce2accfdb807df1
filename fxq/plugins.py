"""Loading what other packages add to fxq through entry points: passes (``fxq.passes``), backends
(``fxq.backends``) and recipes (``fxq.recipes``).

Each group loads once, the first time fxq needs one of its kind. A plugin that fails to import, or whose object
is refused (a name clash, a malformed backend table), stops fxq with a ConfigError naming the plugin's
distribution and entry point: a broken extension is never skipped silently. ``plugin_of(obj)`` says which
plugin provided an object, for error messages about it.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from fxq.errors import ConfigError

_PROVIDED_BY: dict[int, str] = {}  # id of a loaded object -> "plugin 'dist' (entry point ...)"
_LOADED: set[str] = set()


def load_group(group: str, register: Callable[[Any], Any]) -> None:
    """Load every entry point of ``group`` and hand each object to ``register``, once per process (a failure
    is raised again next time rather than forgotten)."""
    if group in _LOADED:
        return
    _LOADED.add(group)
    try:
        _load(group, register)
    except ConfigError:
        _LOADED.discard(group)
        raise


def _load(group: str, register: Callable[[Any], Any]) -> None:
    for point in entry_points(group=group):
        where = _describe(point)
        try:
            obj = point.load()
            _PROVIDED_BY[id(obj)] = where
            register(obj)
        except Exception as err:  # noqa: BLE001 - any failure of third-party code is reported as the plugin's
            raise ConfigError(f"{where} failed to load: {type(err).__name__}: {err}") from err


def plugin_of(obj: Any) -> str | None:
    """The plugin an entry point provided ``obj`` from ("plugin 'dist' (entry point group: name = value)")."""
    return _PROVIDED_BY.get(id(obj))


def _describe(point: EntryPoint) -> str:
    dist = point.dist.name if point.dist is not None else "?"
    return f"plugin {dist!r} (entry point {point.group}: {point.name} = {point.value})"
