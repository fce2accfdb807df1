"""The reference backend: explicit quantize/dequantize around float ops. It runs anywhere and is the numerical
ground truth native backends are checked against; its table is the widest set of ops fxq quantizes."""

from __future__ import annotations

from fxq.backends.table import Backend, FixedQParams, Observation, OpSupport, table

OWN, SHARED, FIXED = Observation.OWN, Observation.SHARED, Observation.FIXED

# Output in [0, 1]: 256 steps from 0.
UNIT_RANGE = FixedQParams(1.0 / 256.0, 0)
# Output in [-1, 1]: 256 steps centred on 128.
SIGNED_UNIT_RANGE = FixedQParams(2.0 / 256.0, 128)

_WEIGHTED = ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"]
_FUSED = ["linear_relu", "conv1d_relu", "conv2d_relu", "conv3d_relu"]
# softmax is bounded too, but observed: its outputs are about 1/N over N values, so the fixed [0, 1) range would
# leave them a step or two (measured: 4 dB SQNR over 512 values; 38 dB observed).
_OWN = ["add", "mul", "add_relu", "mul_relu", "matmul", "cat", "layer_norm", "group_norm", "instance_norm", "batch_norm",
        "batch_norm_relu", "gelu", "silu", "hardswish", "elu", "leaky_relu", "softmax"]
_SHARED = ["relu", "relu6", "hardtanh", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d",
           "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "flatten",
           "reshape", "transpose", "permute", "squeeze", "unsqueeze", "contiguous", "dropout", "identity",
           "getitem", "chunk", "split", "mean"]
_FIXED = {"sigmoid": UNIT_RANGE, "hardsigmoid": UNIT_RANGE, "tanh": SIGNED_UNIT_RANGE}

REFERENCE_OPS = table(
    [OpSupport(name, OWN, weighted=True, weight_arg=1) for name in _WEIGHTED]
    + [OpSupport(name, OWN, weighted=True) for name in _FUSED]
    + [OpSupport(name, OWN) for name in _OWN]
    + [OpSupport(name, SHARED) for name in _SHARED]
    + [OpSupport(name, FIXED, fixed=qparams) for name, qparams in _FIXED.items()]
)

REFERENCE = Backend("reference", REFERENCE_OPS)
