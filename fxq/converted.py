"""What ``fxq.convert`` returns: a GraphModule that runs its calls on the installed runtime (``runtime``), explains
a failed call by its inputs (``input_guard``) and keeps its activation qparams in its ``state_dict``
(``qparam_state``).

It is a GraphModule subclass rather than hooks: forward hooks are dropped by ``deepcopy`` and put every call on
``nn.Module``'s slow path, and the generated code (``print(gm.code)``) stays as it was. The class survives
``copy.deepcopy`` and pickling with its recorded inputs.
"""

from __future__ import annotations

from torch.fx import GraphModule

from fxq import qparam_state, runtime
from fxq.errors import FxqError, LoadError
from fxq.input_guard import INPUTS_ATTR, diagnose, recorded_inputs


class ConvertedGraphModule(GraphModule):
    """A converted model (see the module docstring)."""

    def __call__(self, *args, **kwargs):
        run = runtime.runner(self)
        if run is None:
            return self._explained(super().__call__, args, kwargs)
        try:
            return run(*args, **kwargs)
        except FxqError:
            raise
        except Exception:  # TorchScript's message quotes its own code: the graph's failure is the one to explain
            return self._explained(super().__call__, args, kwargs)

    def _explained(self, call, args: tuple, kwargs: dict):
        """``call(*args, **kwargs)``, a failure explained by the inputs when they differ from the recorded ones."""
        try:
            return call(*args, **kwargs)
        except FxqError:
            raise
        except Exception as err:
            problem = diagnose(self, args, kwargs, err)
            if problem is None:
                raise
            raise problem from err

    def __deepcopy__(self, memo):
        """GraphModule's deepcopy rebuilds the module from its graph and keeps only what the graph uses (and its
        meta, with the runtime choice: the copy builds its own runtime on its first call)."""
        result = super().__deepcopy__(memo)
        setattr(result, INPUTS_ATTR, recorded_inputs(self))
        return result

    def __reduce__(self):
        """Unpickling re-traces the code into a plain GraphModule; ``_rebuild`` makes it a converted one again."""
        rebuild, args = super().__reduce__()
        return _rebuild, (rebuild, args)

    def recompile(self):
        """A new forward makes the installed runtime's copy of the graph stale: it is rebuilt on the next call."""
        runtime.invalidate(self)
        return super().recompile()

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        qparam_state.save(self, destination, prefix)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        runtime.invalidate(self)  # the TorchScript copy holds the old weights as constants
        if qparam_state.load(self, state_dict, prefix, missing_keys, unexpected_keys, error_msgs):
            self.recompile()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``, with a state_dict that does not fit refused by a ``LoadError`` that
        names the keys (torch's ``RuntimeError`` is chained)."""
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        except RuntimeError as err:
            raise LoadError(f"this state_dict does not fit the converted model: {err}. Load a state_dict saved from "
                            "a model prepared and converted the same way (same model, qconfig mapping, backend and "
                            "fxq version)") from err


def _rebuild(rebuild, args) -> GraphModule:
    """Unpickle with torch's own ``rebuild``, then make the result a converted module again."""
    gm = rebuild(*args)  # the recorded inputs come back as a plain attribute of the module
    as_converted(gm, recorded_inputs(gm))
    gm.recompile()
    return gm


def as_converted(gm: GraphModule, inputs: tuple) -> GraphModule:
    """Make ``gm`` a ``ConvertedGraphModule`` remembering ``inputs`` (see ``input_guard.input_records``), in place.

    Like torch's GraphModule, each converted module gets a class of its own (``recompile`` sets ``forward`` on
    the class); the caller recompiles, or runs passes that do, before the module is called.
    """
    if not isinstance(gm, ConvertedGraphModule):
        name = type(gm).__name__
        gm.__class__ = type("GraphModuleImpl", (ConvertedGraphModule,), {})  # the name GraphModule.__new__ skips
        type(gm).__name__ = name
    setattr(gm, INPUTS_ATTR, tuple(inputs))
    return gm
