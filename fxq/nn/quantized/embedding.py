"""Weight-only quantized Embedding and EmbeddingBag: every row stored in 8 or 4 bits with its own scale and
offset (row-wise), looked up by torch's fused kernels (``embedding_bag_byte/4bit_rowwise_offsets``) without
ever materialising the float table. Embedding tables are often the largest weights of a model and are only
read, never multiplied, so this is where 4 bits pay off first."""

from __future__ import annotations

import torch
from torch import nn

_PREPACK = {8: "embedding_bag_byte_prepack", 4: "embedding_bag_4bit_prepack"}
_UNPACK = {8: "embedding_bag_byte_unpack", 4: "embedding_bag_4bit_unpack"}


class QuantizedEmbedding(nn.Module):
    """An ``nn.Embedding`` or ``nn.EmbeddingBag`` (sum or mean) whose table is packed row-wise in ``bits`` (8 or
    4). Inputs and outputs are as for the float module.

    The packed table is one uint8 tensor: each row holds its quantized values followed by its scale and offset
    (float32 for 8 bits, float16 for 4 bits), which is what ``state_dict`` stores.
    """

    _fxq_leaf = True
    __jit_unused_properties__ = ["weight"]  # model code's read of the table, not the runtime's

    def __init__(self, embedding: nn.Embedding | nn.EmbeddingBag, bits: int) -> None:
        super().__init__()
        if bits not in _PREPACK:
            raise ValueError(f"row-wise embedding quantization supports 8 or 4 bits, not {bits}")
        self.bag = isinstance(embedding, nn.EmbeddingBag)
        self.mode = embedding.mode if self.bag else "sum"
        if self.mode not in ("sum", "mean"):
            raise ValueError(f"EmbeddingBag mode {self.mode!r} has no row-wise quantized kernel (sum and mean do)")
        if embedding.max_norm is not None:
            raise ValueError("embeddings with max_norm renormalise rows on lookup; quantized tables cannot")
        self.bits, self.num_embeddings, self.embedding_dim = bits, embedding.num_embeddings, embedding.embedding_dim
        self.include_last_offset = bool(getattr(embedding, "include_last_offset", False))
        self.padding_idx = embedding.padding_idx
        # lookups return the table's own dtype (a bfloat16 model stays bfloat16); the kernels work in float32
        self.float_dtype = embedding.weight.dtype if embedding.weight.is_floating_point() else torch.float32
        table = embedding.weight.detach().float().contiguous()
        self.register_buffer("packed", getattr(torch.ops.quantized, _PREPACK[bits])(table))
        self.fxq_concept = "embedding_bag" if self.bag else "embedding"

    @property
    def weight(self) -> torch.Tensor:
        """The table in the float module's dtype, dequantized on each access: for model code that reads
        ``.weight`` (CLIP's text model takes its position count from ``position_embedding.weight.shape``)."""
        return getattr(torch.ops.quantized, _UNPACK[self.bits])(self.packed).to(self.float_dtype)

    def rows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The table as (levels, scales, offsets): uint8 levels (rows x embedding_dim, one per value even for 4
        bits) and float32 per-row scale and offset, row = levels * scale + offset. For exporters, which store
        the levels and do the arithmetic in the file."""
        width = self.embedding_dim if self.bits == 8 else self.embedding_dim // 2
        stored = self.packed[:, :width]
        if self.bits == 4:  # two values per byte, the first in the low nibble
            stored = torch.stack([stored & 15, stored >> 4], -1).reshape(len(stored), -1)
        float_type = torch.float32 if self.bits == 8 else torch.float16
        size = torch.finfo(float_type).bits // 8
        scale, offset = (self.packed[:, width + i * size:width + (i + 1) * size].contiguous().view(float_type)
                         for i in (0, 1))
        return stored, scale.float().reshape(-1), offset.float().reshape(-1)

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor | None = None,
                per_sample_weights: torch.Tensor | None = None) -> torch.Tensor:
        return self._bags(indices, offsets, per_sample_weights).to(self.float_dtype)

    def _bags(self, indices: torch.Tensor, offsets: torch.Tensor | None,
              per_sample_weights: torch.Tensor | None) -> torch.Tensor:
        if not self.bag:
            flat = indices.reshape(-1)
            rows = self._lookup(flat, torch.arange(flat.numel()), None, False)
            return rows.reshape(indices.shape + (self.embedding_dim,))
        if indices.dim() == 2:  # fixed-length bags, one per row
            offsets = torch.arange(0, indices.numel(), indices.shape[1])
            indices = indices.reshape(-1)
        if offsets is None:
            raise ValueError("an EmbeddingBag over 1-D indices needs offsets (as for nn.EmbeddingBag)")
        if self.mode == "mean" and per_sample_weights is not None:
            raise ValueError("per_sample_weights only apply to mode='sum' (as for nn.EmbeddingBag)")
        weights = per_sample_weights.float() if per_sample_weights is not None else None
        summed = self._lookup(indices, offsets, weights, self.include_last_offset)
        if self.mode == "sum":
            return summed
        last = torch.tensor([indices.numel()], dtype=offsets.dtype)
        ends = offsets[1:] if self.include_last_offset else torch.cat([offsets[1:], last])
        starts = offsets[:-1] if self.include_last_offset else offsets
        counts = (ends - starts).clamp(min=1).to(summed.dtype).unsqueeze(1)
        return summed / counts  # the kernel sums only; an empty bag stays zero, as in float

    def _lookup(self, indices: torch.Tensor, offsets: torch.Tensor, per_sample_weights: torch.Tensor | None,
                include_last_offset: bool) -> torch.Tensor:
        """The kernel's sum of rows per bag (a lookup is bags of one), written out per width so TorchScript
        compiles it (the runtime and ``fxq.export`` script converted graphs that hold embeddings)."""
        if self.bits == 8:
            return torch.ops.quantized.embedding_bag_byte_rowwise_offsets(
                self.packed, indices, offsets, False, 0, False, per_sample_weights, None, include_last_offset)
        return torch.ops.quantized.embedding_bag_4bit_rowwise_offsets(
            self.packed, indices, offsets, False, 0, False, per_sample_weights, None, include_last_offset)

    def extra_repr(self) -> str:
        kind = f"bag, mode={self.mode}" if self.bag else "lookup"
        return f"{self.num_embeddings}, {self.embedding_dim}, {kind}, weight={self.bits}-bit row-wise"
