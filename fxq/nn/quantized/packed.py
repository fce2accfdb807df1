"""What every native weighted module shares: a weight (int8, or fp16 for dynamic fp16 linears) and a float bias
kept as state (so ``state_dict``, ``deepcopy`` and pickling work), and a kernel-specific prepacked copy rebuilt
from them. In ``state_dict`` the weight is stored compactly (see ``weight_state``). Static modules also carry
their output qparams (``scale``, ``zero_point``); dynamic ones compute them per call."""

from __future__ import annotations

import torch

from fxq.nn.quantized import weight_state
from fxq.nn.quantized.engine import using_engine
from fxq.nn.quantized.kernel_state import RebuildsKernelState


class PackedWeightModule(RebuildsKernelState):
    """Base of native weighted modules. Subclasses implement ``_pack()``, ``_kernel()`` and ``forward`` and call
    ``_repack()`` at the end of ``__init__``.

    The prepacked weight is an opaque kernel object that cannot be saved or copied, so it is never state: it is
    rebuilt from ``qweight``/``bias`` after loading, copying or unpickling.
    """

    _fxq_leaf = True
    _kernel_state = ("_packed", "_run")
    _qparams: tuple[str, ...] = ()  # the (scale, zero point) attributes the kernel takes, saved in state_dict
    def __init__(self, qweight: torch.Tensor, bias: torch.Tensor | None, relu: bool,
                 output_qparams: tuple[float, int] | None = None) -> None:
        super().__init__()
        self.qweight = qweight
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.relu = bool(relu)
        if output_qparams is not None:
            self.scale, self.zero_point = float(output_qparams[0]), int(output_qparams[1])
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

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for key, value in weight_state.to_state(self.qweight).items():
            destination[prefix + key] = value
        for name in self._qparams:
            dtype = torch.int64 if name.endswith("zero_point") else torch.float64
            destination[prefix + name] = torch.tensor(getattr(self, name), dtype=dtype)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        if prefix + "bias" in state_dict:  # take the saved bias whole (ours may be None)
            self._buffers["bias"] = state_dict[prefix + "bias"].clone()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        names = weight_state.keys_like(self.qweight)
        keys = [prefix + key for key in (*names, *self._qparams)]
        unexpected_keys[:] = [key for key in unexpected_keys if key not in keys]
        absent = [key for key in keys if key not in state_dict]
        if absent:
            missing_keys.extend(absent)
            return
        weight = weight_state.from_state({key: state_dict[prefix + key] for key in names})
        if weight.shape != self.qweight.shape:
            error_msgs.append(f"size mismatch for {prefix}{names[0]}: the checkpoint's weight has shape "
                              f"{tuple(weight.shape)}, this module's {tuple(self.qweight.shape)}")
            return
        for name in self._qparams:
            value = state_dict[prefix + name]
            setattr(self, name, int(value) if name.endswith("zero_point") else float(value))
        self.qweight = weight
        self._repack()

    def _weight_repr(self) -> str:
        q = self.qweight
        if not q.is_quantized:
            weight = ""
        elif q.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            weight = f" per-channel axis={q.q_per_channel_axis()}"
        else:
            weight = f" per-tensor scale={q.q_scale():.4g}"
        relu = ", relu" if self.relu else ""
        output = (f"scale={self.scale:.4g}, zero_point={self.zero_point}, dtype=quint8, " if hasattr(self, "scale")
                  else "activations=dynamic, ")
        return f"{output}weight={str(q.dtype).replace('torch.', '')}{weight}{relu}"
