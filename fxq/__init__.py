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
from fxq.backends import Backend, OpSupport, available_backends, register_backend
from fxq.benchmark import BenchmarkResult, benchmark
from fxq.dump import Comparison, LayerError, NodeRow, ObserverRow, compare, inspect, observer_summary
from fxq.dynamic import Dynamic, DynamicReport, WeightOnly, quantize_dynamic
from fxq.errors import (
    CalibrationError,
    ConfigError,
    FxqError,
    FxqWarning,
    InputError,
    LoadError,
    PassError,
    PassOrderError,
    TraceError,
)
from fxq.exporters import export
from fxq.graph_pass import GraphPass, PassContext
from fxq.pass_manager import PassManager
from fxq.pass_registry import available_passes, get_pass, register_pass
from fxq.pattern import ANY, Pattern
from fxq.qat import prepare_qat
from fxq.qconfig import (
    QConfig,
    get_default_dynamic_qconfig,
    get_default_embedding_qconfig,
    get_default_qconfig,
)
from fxq.qconfig_mapping import QConfigMapping, get_default_qat_qconfig_mapping, get_default_qconfig_mapping
from fxq.recipes import Recipe, register_recipe
from fxq.rewriter import Declined, Rewriter, Rule
from fxq.saving import load, save
from fxq.tracing import trace
from fxq.tuning import TuneResult, tune

__version__ = "0.1.0"

__all__ = [
    "ANY", "BenchmarkResult", "CalibrationError", "Comparison", "ConfigError", "Dynamic", "DynamicReport", "WeightOnly", "FxqError", "FxqWarning", "GraphPass", "InputError", "LoadError", "LayerError",
    "NodeInfo", "NodeRow", "ObserverRow", "PassContext", "PassError", "PassManager", "PassOrderError", "Pattern",
    "QConfig", "QConfigMapping", "TraceError", "available_passes", "compare", "convert",
    "get_default_dynamic_qconfig", "get_default_embedding_qconfig", "get_default_qat_qconfig_mapping", "get_default_qconfig", "get_default_qconfig_mapping", "get_pass", "info",
    "inspect", "observer_summary", "observers", "pass_records", "prepare", "quantize", "quantize_dynamic", "register_pass",
    "report_of", "save", "load", "trace", "export", "tune", "TuneResult", "prepare_qat", "benchmark",
    "Backend", "OpSupport", "available_backends", "register_backend", "Recipe", "register_recipe", "Rule", "Rewriter",
    "Declined",
]
