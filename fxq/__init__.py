"""fxq: an FX graph-mode quantization compiler for PyTorch.

    mapping = fxq.get_default_qconfig_mapping("x86")
    prepared = fxq.prepare(model, mapping, example_inputs)
    for batch in calibration_data:
        prepared(*batch)
    quantized = fxq.convert(prepared)
"""

from fxq import observers
from fxq.annotation import NodeInfo, info
from fxq.api import convert, pass_records, prepare, quantize, report_of
from fxq.dump import NodeRow, inspect
from fxq.errors import (
    CalibrationError,
    ConfigError,
    FxqError,
    FxqWarning,
    PassError,
    PassOrderError,
    TraceError,
)
from fxq.graph_pass import GraphPass, PassContext
from fxq.pass_manager import PassManager
from fxq.pass_registry import available_passes, get_pass, register_pass
from fxq.pattern import ANY, Pattern
from fxq.qconfig import QConfig, get_default_qconfig
from fxq.qconfig_mapping import QConfigMapping, get_default_qat_qconfig_mapping, get_default_qconfig_mapping
from fxq.tracing import trace

__version__ = "0.1.0"

__all__ = [
    "ANY", "CalibrationError", "ConfigError", "FxqError", "FxqWarning", "GraphPass", "NodeInfo", "PassContext",
    "PassError", "PassManager", "PassOrderError", "Pattern", "QConfig", "QConfigMapping", "TraceError",
    "available_passes", "convert", "get_default_qat_qconfig_mapping", "get_default_qconfig",
    "get_default_qconfig_mapping", "get_pass", "info", "inspect", "NodeRow", "observers", "pass_records", "prepare", "quantize", "report_of",
    "register_pass",
    "trace",
]
