"""The qnnpack backend (ARM and mobile kernels): the x86 table without 3-d convolutions, which qnnpack does not
implement, full-range activations (no reduce_range), and the same native lowering rules."""

from __future__ import annotations

from fxq.backends.native import NATIVE_RULES
from fxq.backends.table import Backend
from fxq.backends.x86 import X86

NO_QNNPACK_KERNEL = {"conv3d", "conv3d_relu", "conv_transpose3d"}

QNNPACK = Backend("qnnpack", {name: entry for name, entry in X86.ops.items() if name not in NO_QNNPACK_KERNEL},
                  lowering_rules=NATIVE_RULES, reduce_range=False, engine="qnnpack")
