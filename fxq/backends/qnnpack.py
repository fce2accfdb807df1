"""The qnnpack backend (ARM and mobile kernels): the x86 table without 3-d convolutions, which qnnpack does not
implement, full-range 8-bit weights (x86 narrows them to 7 bits), and the same native lowering rules.

relu6/hardtanh/clamp also stay float here: under the qnnpack engine, torch 2.13's int8 clamp returns wrong
values for channels-last tensors (which every qnnpack conv produces); tests/backends catches this if it returns.
"""

from __future__ import annotations

from dataclasses import replace

from fxq.backends.native import NATIVE_RULES
from fxq.backends.table import Backend
from fxq.backends.x86 import X86

NO_QNNPACK_KERNEL = {"conv3d", "conv3d_relu", "conv_transpose3d", "relu6", "hardtanh"}

# qnnpack's transposed convolution takes per-channel weights only along axis 1 (output channels); fxq's
# per-channel weight observers use axis 0, so these weights are per tensor here too.
PER_TENSOR_TRANSPOSED = ("qnnpack's int8 transposed convolution needs per-channel scales along weight axis 1, "
                         "and fxq's per-channel weight observers use axis 0")


def _qnnpack_entry(entry):
    if entry.per_tensor_weight:
        entry = replace(entry, per_tensor_weight=PER_TENSOR_TRANSPOSED)
    # qnnpack's linear returns int8 only ("apply_with_input_q_dq_qweight_dq_output_fp32 is not implemented for
    # this packed parameter type"), so its outputs are always requantized.
    return replace(entry, float_output=False)


QNNPACK = Backend("qnnpack", {name: _qnnpack_entry(entry) for name, entry in X86.ops.items()
                              if name not in NO_QNNPACK_KERNEL},
                  lowering_rules=NATIVE_RULES, engine="qnnpack")
