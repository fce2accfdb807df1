"""The reference backend: explicit quantize/dequantize around float ops. It runs anywhere and is the numerical
ground truth native backends are checked against; its table is the widest set of ops fxq quantizes."""

from __future__ import annotations

from fxq.backends.table import Backend, Observation, OpSupport, table

OWN, SHARED, NARROWING = Observation.OWN, Observation.SHARED, Observation.NARROWING

_WEIGHTED = ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"]
_FUSED = ["linear_relu", "conv1d_relu", "conv2d_relu", "conv3d_relu"]
# Bounded ops (softmax, sigmoid, hardsigmoid, tanh) are observed too: their bound is only an upper limit, and the
# observed range is never wider. A fixed [0, 1) range leaves softmax outputs over N values (about 1/N) a step or two
# (measured: 4 dB SQNR over 512 values, 38 dB observed), and a tanh of small values, or a hardsigmoid near 0.5,
# nothing at all (0 and 5 dB in fuzzed models). On x86, int8 tanh and hardsigmoid kernels produce only their fixed
# qparams, so these run as reference islands unless a user's mapping fixes the qparams (torch.ao's default).
# mean is observed too: averaging shrinks a value (the spatial mean of zero-centred features is a few steps of
# their range; fuzzed: 10.8 dB shared, 31 dB observed), and native backends run it in float anyway.
_OWN = ["add", "mul", "add_relu", "mul_relu", "matmul", "cat", "layer_norm", "group_norm", "instance_norm", "batch_norm",
        "batch_norm_relu", "gelu", "silu", "hardswish", "elu", "leaky_relu", "softmax", "sigmoid", "hardsigmoid",
        "tanh", "mean"]
_SHARED = ["relu", "relu6", "hardtanh", "max_pool1d", "max_pool2d", "max_pool3d", "flatten", "reshape", "transpose",
           "permute", "squeeze", "unsqueeze", "contiguous", "dropout", "identity", "getitem", "chunk", "split",
           "slice", "interpolate"]  # nearest and bilinear resizing stay within their input's range
# Average pools keep their input's qparams, so a CNN's int8 chain stays unbroken (ResNet's pool of post-ReLU
# features is 1.1-6x narrower than its input), unless calibration shows the output far narrower: a global mean of
# zero-centred values spans a few of its input's steps (fuzzed: 25-50x narrower, 7-11 dB shared). See ``lower``.
_NARROWING = ["avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
              "adaptive_avg_pool3d"]

# Ops whose int8 kernel can also return float (fbgemm's linear): the reference backend computes what that kernel
# does, so native results stay checkable against it.
_FLOAT_OUTPUT = {"linear", "linear_relu"}

REFERENCE_OPS = table(
    [OpSupport(name, OWN, weighted=True, weight_arg=1, float_output=name in _FLOAT_OUTPUT) for name in _WEIGHTED]
    + [OpSupport(name, OWN, weighted=True, float_output=name in _FLOAT_OUTPUT) for name in _FUSED]
    + [OpSupport(name, OWN) for name in _OWN]
    + [OpSupport(name, SHARED) for name in _SHARED]
    + [OpSupport(name, NARROWING) for name in _NARROWING]
)

REFERENCE = Backend("reference", REFERENCE_OPS)
