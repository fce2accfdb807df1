"""Say so when a converted model stores one module's weight several times.

A module called more than once (a siamese encoder, ALBERT's shared layers, a block applied in a loop) becomes
one int8 kernel module per call: each call has its own activation qparams, and fxq's kernel modules hold them
beside the packed weight. The weight is then stored once per call, and a tiny ALBERT came out at 1.26x of its
float size, where ``quantize_dynamic`` (a module swap, one copy) gives 0.27x. Until kernel modules can share a
weight, convert warns, naming the modules.
"""

from __future__ import annotations

import warnings
from collections import defaultdict

from torch.fx import GraphModule

from fxq.annotation import info
from fxq.errors import FxqWarning


def warn_duplicated_weights(gm: GraphModule) -> None:
    """An ``FxqWarning`` naming the float modules whose weight ``gm`` holds in more than one kernel module."""
    modules = dict(gm.named_modules())
    copies: dict[str, set[str]] = defaultdict(set)
    for node in gm.graph.nodes:
        if node.op == "call_module" and _holds_weight(modules.get(node.target)) and info(node).module_path:
            copies[info(node).module_path].add(str(node.target))
    repeated = {path: len(targets) for path, targets in copies.items() if len(targets) > 1}
    if repeated:
        named = ", ".join(f"{path!r} ({count} copies)" for path, count in list(repeated.items())[:3])
        more = f" and {len(repeated) - 3} more" if len(repeated) > 3 else ""
        warnings.warn(f"modules called more than once store their int8 weight once per call: {named}{more}. The "
                      "quantized model is larger than one copy each would make it; fxq.quantize_dynamic(model) "
                      "swaps modules and keeps one copy", FxqWarning, stacklevel=3)


def _holds_weight(module) -> bool:
    """A kernel module with a weight (read from the class and buffers: ``qweight`` may unpack on access)."""
    return module is not None and type(module).__module__.startswith("fxq.nn") and (
        hasattr(type(module), "qweight") or "qweight" in module._buffers or "packed" in module._buffers)
