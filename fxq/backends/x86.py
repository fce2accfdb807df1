"""The x86 backend (fbgemm/onednn kernels): the reference table minus ops with no int8 kernel, lowered by the
native rules. Its default qconfig narrows weights to 7 bits so fbgemm's 16-bit sums cannot overflow on CPUs
without VNNI (``fxq.qconfig.get_default_qconfig``)."""

from __future__ import annotations

from dataclasses import replace

from fxq.backends.native import NATIVE_RULES
from fxq.backends.reference import REFERENCE_OPS
from fxq.backends.table import Backend

# These run in float between a dequantize and a quantize, so quantizing them would gain nothing: silu has no
# int8 kernel, and the int8 gelu keeps its input's qparams, so it cannot produce the observed output range.
NO_INT8_KERNEL = {"gelu", "silu"}

PER_TENSOR_TRANSPOSED = ("torch's int8 transposed convolution rejects per-channel weights on x86 (\"Per Channel "
                         "Quantization is currently disabled for transposed conv\")")


def _x86_entry(entry):
    if entry.concept.startswith("conv_transpose"):
        return replace(entry, per_tensor_weight=PER_TENSOR_TRANSPOSED)
    return entry


X86 = Backend("x86", {name: _x86_entry(entry) for name, entry in REFERENCE_OPS.items() if name not in NO_INT8_KERNEL},
              lowering_rules=NATIVE_RULES, engine="x86")
