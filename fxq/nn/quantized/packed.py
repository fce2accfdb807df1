"""What every native weighted module shares: a weight (int8, or fp16 for dynamic fp16 linears) and a float bias
kept as state (so ``state_dict``, ``deepcopy`` and pickling work), and a kernel-specific prepacked copy of them.
In ``state_dict`` the weight is stored compactly (see ``weight_state``). Static modules also carry their output
qparams (``scale``, ``zero_point``); dynamic ones compute them per call.

The kernel's packed weight is the only copy in memory: ``qweight`` unpacks it on each access, so ``state_dict``,
pickling, ``fxq.save`` and ``deepcopy`` see what they saw when the module kept its own copy as well, which doubled
its memory. Where a kernel does not give back exactly the weight it packed (fbgemm keeps float32 scales, so a
float64 scale comes back rounded; qnnpack cannot unpack a 3-d convolution), the module keeps the weight too."""

from __future__ import annotations

import torch

from fxq.nn.quantized import weight_state
from fxq.nn.quantized.engine import using_engine
from fxq.nn.quantized.kernel_state import RebuildsKernelState


class PackedWeightModule(RebuildsKernelState):
    """Base of native weighted modules. Subclasses implement ``_pack(weight)``, ``_unpack()``, ``_kernel()`` and
    ``forward`` and call ``_repack()`` at the end of ``__init__``.

    The prepacked weight is an opaque kernel object that cannot be saved or copied, so it is never state: pickling
    and copying save ``qweight`` (unpacked) and ``bias``, and it is packed again from them afterwards.
    """

    _fxq_leaf = True
    _kernel_state = ("_packed", "_run", "_kept_weight")
    # qweight is for people and tools (state_dict, repr, export), never for forward: TorchScript would compile it
    # for every module type at every freeze
    __jit_unused_properties__ = ["qweight"]
    _qparams: tuple[str, ...] = ()  # the (scale, zero point) attributes the kernel takes, saved in state_dict

    def __init__(self, qweight: torch.Tensor, bias: torch.Tensor | None, relu: bool,
                 output_qparams: tuple[float, int] | None = None) -> None:
        super().__init__()
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.relu = bool(relu)
        if output_qparams is not None:
            self.scale, self.zero_point = float(output_qparams[0]), int(output_qparams[1])
        self.engine = torch.backends.quantized.engine  # the engine the weights are packed for
        self._packed = None  # subclasses call self._repack() once their kernel settings are set
        self._kept_weight = None  # the weight, where the kernel cannot give it back exactly
        self.qweight = qweight

    @property
    def qweight(self) -> torch.Tensor:
        """The weight, unpacked from the kernel's copy on each access (or the kept one, see the module doc)."""
        kept = self._kept_weight
        if kept is not None:
            return kept
        return self._unpack()

    @qweight.setter
    @torch.jit.unused
    def qweight(self, weight: torch.Tensor) -> None:
        # held until _repack() packs it, where fxq.load and unpickling put the weight they read
        self.__dict__["qweight"] = weight

    def __getstate__(self):
        """Pickled, copied and saved with its weight, as when the module kept one."""
        return {**super().__getstate__(), "qweight": self.qweight}

    def _repack(self) -> None:
        weight = self.__dict__.pop("qweight", None)  # set or loaded since the last packing
        if weight is None:  # repacking the packed weight (for a new bias, say)
            weight = self.qweight
        with using_engine(self.engine):
            self._packed = self._pack(weight)
            self._kept_weight = None if self._unpacks_exactly(weight) else weight
        self._run = self._kernel()  # resolved once: forward is on the hot path

    def _unpacks_exactly(self, weight: torch.Tensor) -> bool:
        """Whether the kernel gives back ``weight`` exactly: values, dtype, shape, scheme, scales and zero points."""
        try:
            unpacked = self._unpack()
        except RuntimeError:  # an engine without an unpack for this kernel
            return False
        # torch.equal of quantized tensors compares their quantizers too (scheme, scales, zero points, axis)
        return (unpacked.dtype == weight.dtype and unpacked.shape == weight.shape
                and unpacked.is_quantized == weight.is_quantized and torch.equal(unpacked, weight))

    def _kernel(self):
        raise NotImplementedError

    def _pack(self, weight: torch.Tensor):
        raise NotImplementedError

    def _unpack(self) -> torch.Tensor:
        """The weight read back from the kernel's packed copy (TorchScript compiles it, for ``qweight``)."""
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
        current = self.qweight
        names = weight_state.keys_like(current)
        keys = [prefix + key for key in (*names, *self._qparams)]
        unexpected_keys[:] = [key for key in unexpected_keys if key not in keys]
        absent = [key for key in keys if key not in state_dict]
        if absent:
            missing_keys.extend(absent)
            return
        weight = weight_state.from_state({key: state_dict[prefix + key] for key in names})
        if weight.shape != current.shape:
            error_msgs.append(f"size mismatch for {prefix}{names[0]}: the checkpoint's weight has shape "
                              f"{tuple(weight.shape)}, this module's {tuple(current.shape)}")
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
