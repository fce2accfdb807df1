"""Dynamically quantized LSTM and GRU: every layer's and direction's input and hidden weights are qint8 and
prepacked; the recurrent kernel (``torch.quantized_lstm`` / ``quantized_gru``) quantizes activations per step
on the fly, at full 8 bits (``quantize_weight`` decides the weights' range: fxq narrows them instead, see
``fxq.dynamic``). Multi-layer, bidirectional and batch_first models keep their behaviour; dropout between layers
is an eval-time no-op, as in the float module. Inputs may be ``PackedSequence``s (``pack_padded_sequence``), as
for the float modules; TorchScript compiles the tensor path."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from fxq.nn.quantized.engine import using_engine
from fxq.nn.quantized.kernel_state import RebuildsKernelState
from fxq.nn.quantized.weight_state import KEYS, from_state, to_state


class PackedCell(nn.Module):
    """One layer and direction's recurrent kernel parameters (its prepacked input and hidden weights), built once,
    in a module of its own: TorchScript freezes such an attribute of a module, but not a list of them."""

    def __init__(self, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias_ih: torch.Tensor,
                 bias_hh: torch.Tensor) -> None:
        super().__init__()
        packed_ih = torch.ops.quantized.linear_prepack(weight_ih, bias_ih)
        packed_hh = torch.ops.quantized.linear_prepack(weight_hh, bias_hh)
        self.params = torch.ops.quantized.make_quantized_cell_params_dynamic(packed_ih, packed_hh, bias_ih, bias_hh,
                                                                             False)


class DynamicRNN(RebuildsKernelState):
    """Base of the dynamic LSTM/GRU: holds the quantized weights by name, rebuilds the kernel's packed cells
    from them after loading, copying or unpickling. Subclasses implement ``forward``; TorchScript compiles and
    freezes them."""

    _fxq_leaf = True
    _kernel_state = ("cells",)
    __jit_ignored_attributes__ = ["weights"]  # quantized copies for state_dict; the packed cells are what run

    def __init__(self, rnn: nn.LSTM | nn.GRU, quantize_weight) -> None:
        super().__init__()
        if getattr(rnn, "proj_size", 0):
            raise TypeError("LSTMs with proj_size have no dynamic int8 kernel")
        self.input_size, self.hidden_size = rnn.input_size, rnn.hidden_size
        self.num_layers, self.bidirectional = rnn.num_layers, rnn.bidirectional
        self.batch_first, self.has_biases = rnn.batch_first, rnn.bias
        self.engine = torch.backends.quantized.engine
        self.weights: dict[str, torch.Tensor] = {}
        for name in self._weight_names():
            self.weights[name] = quantize_weight(getattr(rnn, name).detach())
        for name in self._bias_names():
            value = getattr(rnn, name) if rnn.bias else torch.zeros(getattr(rnn, name.replace("bias", "weight"))
                                                                    .shape[0])
            self.register_buffer(name, value.detach().float().clone())
        self._repack()

    def _suffixes(self) -> list[str]:
        return [f"_l{layer}{rev}" for layer in range(self.num_layers)
                for rev in ("", "_reverse")[: 2 if self.bidirectional else 1]]

    def _weight_names(self) -> list[str]:
        return [f"weight_{kind}{s}" for s in self._suffixes() for kind in ("ih", "hh")]

    def _bias_names(self) -> list[str]:
        return [f"bias_{kind}{s}" for s in self._suffixes() for kind in ("ih", "hh")]

    def _repack(self) -> None:
        with using_engine(self.engine):
            self.cells = nn.ModuleList(
                PackedCell(self.weights[f"weight_ih{s}"], self.weights[f"weight_hh{s}"], getattr(self, f"bias_ih{s}"),
                           getattr(self, f"bias_hh{s}")) for s in self._suffixes())

    def _initial_hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Zeros (layers x directions, [batch,] hidden); written so TorchScript compiles it."""
        states = self.num_layers * (2 if self.bidirectional else 1)
        if x.dim() == 3:
            batch = x.shape[0] if self.batch_first else x.shape[1]
            return torch.zeros(states, batch, self.hidden_size, dtype=x.dtype)
        return torch.zeros(states, self.hidden_size, dtype=x.dtype)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for name, weight in self.weights.items():
            for key, value in to_state(weight).items():
                destination[f"{prefix}{name}.{key}"] = value

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        for name in self.weights:
            keys = {key: f"{prefix}{name}.{key}" for key in KEYS}
            unexpected_keys[:] = [k for k in unexpected_keys if k not in keys.values()]
            if all(full in state_dict for full in keys.values()):
                self.weights[name] = from_state({key: state_dict[full] for key, full in keys.items()})
            else:
                missing_keys.extend(full for full in keys.values() if full not in state_dict)
        self._repack()

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}, batch_first={self.batch_first}, weights=qint8 per-channel, "
                "activations=dynamic")

    def _packed_states(self, x: PackedSequence, states: list[torch.Tensor] | None, count: int) -> list[torch.Tensor]:
        """The ``count`` initial states for packed input ``x``: zeros, or the given ones in ``x``'s sorted batch
        order."""
        if states is None:
            zeros = torch.zeros(self.num_layers * (2 if self.bidirectional else 1), int(x.batch_sizes[0]),
                                self.hidden_size, dtype=x.data.dtype)
            return [zeros] * count
        return states if x.sorted_indices is None else [s.index_select(1, x.sorted_indices) for s in states]

    @staticmethod
    def _unsorted(x: PackedSequence, states: list[torch.Tensor]) -> list[torch.Tensor]:
        return states if x.unsorted_indices is None else [s.index_select(1, x.unsorted_indices) for s in states]


class DynamicLSTM(DynamicRNN):
    """An ``nn.LSTM`` with qint8 weights; same inputs and outputs: ``output, (h, c)``."""

    fxq_concept = "lstm"

    def forward(self, x: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None = None):
        if not torch.jit.is_scripting() and isinstance(x, PackedSequence):
            return self._forward_packed(x, hx)
        if hx is None:
            hx = (self._initial_hidden(x), self._initial_hidden(x))
        params = [cell.params for cell in self.cells]
        # the kernel takes float32: a bfloat16 or float16 model gets its own dtype back
        output, h, c = torch.quantized_lstm(x.float(), [hx[0].float(), hx[1].float()], params, self.has_biases,
                                            self.num_layers, 0.0, False, self.bidirectional, self.batch_first,
                                            dtype=torch.qint8, use_dynamic=True)
        return output.to(x.dtype), (h.to(x.dtype), c.to(x.dtype))

    @torch.jit.unused
    def _forward_packed(self, x: PackedSequence, hx):
        states = self._packed_states(x, None if hx is None else list(hx), 2)
        output, h, c = torch.quantized_lstm(x.data, x.batch_sizes, states, [cell.params for cell in self.cells],
                                            self.has_biases, self.num_layers, 0.0, False, self.bidirectional,
                                            dtype=torch.qint8, use_dynamic=True)
        h, c = self._unsorted(x, [h, c])
        return PackedSequence(output, x.batch_sizes, x.sorted_indices, x.unsorted_indices), (h, c)


class DynamicGRU(DynamicRNN):
    """An ``nn.GRU`` with qint8 weights; same inputs and outputs: ``output, h``."""

    fxq_concept = "gru"

    def forward(self, x: torch.Tensor, hx: torch.Tensor | None = None):
        if not torch.jit.is_scripting() and isinstance(x, PackedSequence):
            return self._forward_packed(x, hx)
        if hx is None:
            hx = self._initial_hidden(x)
        params = [cell.params for cell in self.cells]
        output, h = torch.quantized_gru(x.float(), hx.float(), params, self.has_biases, self.num_layers, 0.0, False,
                                        self.bidirectional, self.batch_first)
        return output.to(x.dtype), h.to(x.dtype)

    @torch.jit.unused
    def _forward_packed(self, x: PackedSequence, hx):
        (state,) = self._packed_states(x, None if hx is None else [hx], 1)
        output, h = torch.quantized_gru(x.data, x.batch_sizes, state, [cell.params for cell in self.cells],
                                        self.has_biases, self.num_layers, 0.0, False, self.bidirectional)
        (h,) = self._unsorted(x, [h])
        return PackedSequence(output, x.batch_sizes, x.sorted_indices, x.unsorted_indices), h
