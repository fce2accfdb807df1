"""The x86 backend (fbgemm/onednn kernels): the reference table minus ops with no int8 kernel, lowered by the
native rules. Activations use reduce_range (7-bit) so int16 accumulation cannot overflow on CPUs without VNNI."""

from __future__ import annotations

from fxq.backends.native import NATIVE_RULES
from fxq.backends.reference import REFERENCE_OPS
from fxq.backends.table import Backend

# No int8 kernel: these run in float between a dequantize and a quantize, so quantizing them gains nothing.
NO_INT8_KERNEL = {"gelu", "silu", "hardsigmoid"}

X86 = Backend("x86", {name: entry for name, entry in REFERENCE_OPS.items() if name not in NO_INT8_KERNEL},
              lowering_rules=NATIVE_RULES, reduce_range=True, engine="x86")
