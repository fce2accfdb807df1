"""What a quantization run did, in numbers a user can check: how many ops were quantized, which stayed float
and why, and the serialized size before and after."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import torch
from tabulate import tabulate
from torch import nn
from torch.fx import GraphModule

from fxq.annotation import info
from fxq.runtime import RUNTIME_KEY
from fxq.shapes import holds_float_tensor

_OPS = ("call_module", "call_function", "call_method")
REPORT_KEY = "fxq_report"


@dataclass
class QuantizationReport:
    """Counts, float ops with their reasons, sizes (bytes of ``torch.save(state_dict)``), and the runtime the
    model's calls run on with why (``fxq.runtime``)."""

    backend: str
    quantized: list[tuple[str, str]] = field(default_factory=list)
    left_float: list[tuple[str, str]] = field(default_factory=list)
    size_before: int = 0
    size_after: int = 0
    runtime: dict = field(default_factory=dict)

    @property
    def size_ratio(self) -> float:
        return self.size_after / self.size_before if self.size_before else float("nan")

    def __str__(self) -> str:
        lines = [f"backend {self.backend}: {len(self.quantized)} ops quantized, {len(self.left_float)} left float; "
                 f"size {self.size_before:,} -> {self.size_after:,} bytes ({self.size_ratio:.2f}x)"]
        if self.runtime:
            lines.append(f"runtime {self.runtime['name']}: {self.runtime['why']}")
        if self.left_float:
            lines.append(tabulate(self.left_float, headers=["float node", "why"]))
        return "\n".join(lines)


def serialized_size(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: what storing the model costs."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def build_report(original: nn.Module, converted: GraphModule, backend: str) -> QuantizationReport:
    """Read the converted graph's annotations into a report (shape arithmetic and q/dq nodes are not ops)."""
    report = QuantizationReport(backend, size_before=serialized_size(original), size_after=serialized_size(converted),
                                runtime=dict(converted.meta.get(RUNTIME_KEY, {})))
    for node in converted.graph.nodes:
        record = info(node)
        if node.op not in _OPS or record.lowered_to in ("quantize", "dequantize") or record.concept is None:
            continue
        if record.float_reason:
            if not holds_float_tensor(node) or record.concept == "getitem":
                continue  # shape arithmetic, integer tensors and picking from a tuple are not ops to quantize
            report.left_float.append((node.name, record.float_reason))
        elif record.lowered_to and record.lowered_to != "float":
            report.quantized.append((node.name, record.lowered_to))
    return report
