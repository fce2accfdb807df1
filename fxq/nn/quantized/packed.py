"""What every native weighted module shares: an int8 weight and float bias kept as state (so ``state_dict``,
``deepcopy`` and pickling work), a kernel-specific prepacked copy rebuilt from them, and the output qparams."""

from __future__ import annotations

import torch
from torch import nn

from fxq.nn.quantized.engine import using_engine


class PackedWeightModule(nn.Module):
    """Base of native weighted modules. Subclasses implement ``_pack()``, ``_kernel()`` and ``forward`` and call
    ``_repack()`` at the end of ``__init__``.

    The prepacked weight is an opaque kernel object that cannot be saved or copied, so it is never state: it is
    rebuilt from ``qweight``/``bias`` after loading, copying or unpickling.
    """

    _fxq_leaf = True
    def __init__(self, qweight: torch.Tensor, bias: torch.Tensor | None, scale: float, zero_point: int,
                 relu: bool) -> None:
        super().__init__()
        self.register_buffer("qweight", qweight)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.scale, self.zero_point, self.relu = float(scale), int(zero_point), bool(relu)
        self.engine = torch.backends.quantized.engine  # the engine the weights are packed for
        self._packed = None  # subclasses call self._repack() once their kernel settings are set

    def _repack(self) -> None:
        with using_engine(self.engine):
            self._packed = self._pack()
        self._run = self._kernel()  # resolved once: forward is on the hot path

    def _kernel(self):
        raise NotImplementedError

    def _pack(self):
        raise NotImplementedError

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("qweight", "bias"):  # take the saved tensors whole: their qscheme may differ from ours
            if prefix + name in state_dict:
                self._buffers[name] = state_dict[prefix + name].clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._repack()

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_packed", None)
        state.pop("_run", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._repack()

    def __deepcopy__(self, memo):
        import copy

        clone = self.__class__.__new__(self.__class__)
        memo[id(self)] = clone
        clone.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return clone

    def _weight_repr(self) -> str:
        q = self.qweight
        if q.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            weight = f"per-channel axis={q.q_per_channel_axis()}"
        else:
            weight = f"per-tensor scale={q.q_scale():.4g}"
        relu = ", relu" if self.relu else ""
        return f"scale={self.scale:.4g}, zero_point={self.zero_point}, dtype=quint8, weight={q.dtype} {weight}{relu}"
