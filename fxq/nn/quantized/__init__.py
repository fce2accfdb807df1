"""fxq's native quantized runtime modules: they hold prepacked int8 weights and call ``torch.ops.quantized``.

They take and return quantized tensors (``QuantizedLinearFloatOutput``: float ones); the x86 and qnnpack backends put them in the graph in place of the
reference ``dequantize -> op -> quantize`` patterns.
"""

from fxq.nn.quantized.conv import QuantizedConv
from fxq.nn.quantized.linear import QuantizedLinear, QuantizedLinearFloatOutput

__all__ = ["QuantizedConv", "QuantizedLinear", "QuantizedLinearFloatOutput"]
