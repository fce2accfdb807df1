"""Modules whose kernels need opaque objects (prepacked weights, recurrent cell parameters) that cannot be
pickled or copied: they keep those out of their state and rebuild them from the plain tensors they keep. Such an
object may sit in a child module of its own (TorchScript freezes a module's packed-weight attributes, not a list
of them): that child is kernel state too, left out of pickles, copies and ``fxq.save`` files."""

from __future__ import annotations

import copy

from torch import nn


class RebuildsKernelState(nn.Module):
    """Base for such modules: the attributes and child modules named in ``_kernel_state`` are dropped when
    pickling or copying and rebuilt by ``_repack()`` afterwards."""

    _kernel_state: tuple[str, ...] = ()

    def _repack(self) -> None:
        raise NotImplementedError

    def __getstate__(self):
        state = self.__dict__.copy()
        for name in self._kernel_state:
            state.pop(name, None)
        state["_modules"] = {name: child for name, child in self._modules.items() if name not in self._kernel_state}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._repack()

    def __deepcopy__(self, memo):
        clone = self.__class__.__new__(self.__class__)
        memo[id(self)] = clone
        clone.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return clone
