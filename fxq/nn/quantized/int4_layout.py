"""The int4 CPU kernel's packed weight layout, read back: so the kernel's copy can be the only one in memory.

``aten._convert_weight_to_int4pack_for_cpu`` packs 4-bit levels (0-15) into bytes in a layout of its own, which
depends on the CPU build (on AVX2: blocks of 32 output rows, each column of a block 16 bytes, row j in the low
nibble and row j + 16 in the high one). torch has no inverse, so fxq models the layout, checks the model on this
machine once with a random weight, and reads weights back only where the check passed (``readable``);
elsewhere the module keeps its own 4-bit copy too.
"""

from __future__ import annotations

import functools

import torch

INNER_K_TILES = 8  # the kernel's tiling of the input dimension: input widths are multiples of 16 * this
_BLOCKS = (32, 64)  # the row-block sizes of the layouts fxq knows


def fits(out_features: int, in_features: int) -> bool:
    """Whether the kernel takes a weight of this shape."""
    return out_features % 16 == 0 and in_features % (INNER_K_TILES * 16) == 0


def pack(levels: torch.Tensor) -> torch.Tensor:
    """The kernel's packed form of int32 ``levels`` (out, in), each 0-15."""
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(levels, INNER_K_TILES)


def readable(out_features: int) -> bool:
    """Whether ``unpack`` can read back a packed weight with this many output rows on this machine."""
    block = _block()
    return block is not None and out_features % block == 0


def unpack(packed: torch.Tensor, out_features: int, in_features: int) -> torch.Tensor:
    """The uint8 levels (out, in) that ``pack`` packed; only where ``readable(out_features)``."""
    return _unpack(packed, _block(), out_features, in_features)


def _unpack(packed: torch.Tensor, block: int, out_features: int, in_features: int) -> torch.Tensor:
    columns = packed.reshape(out_features // block, in_features, block // 2)
    rows = torch.cat([columns & 0x0F, columns >> 4], dim=2)  # (row block, in, row in block)
    return rows.permute(0, 2, 1).reshape(out_features, in_features)


@functools.cache
def _block() -> int | None:
    """The row-block size whose layout model reads a random packed weight back exactly here, or None."""
    levels = torch.randint(0, 16, (128, 128), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
    packed = pack(levels)
    for block in _BLOCKS:
        if torch.equal(_unpack(packed, block, 128, 128).to(torch.int32), levels):
            return block
    return None
