"""lower: replace observers with real quantization, then apply the backend's kernel rules.

Needs an observed graph whose observers have seen calibration data (an observer that saw none is an error
naming its node). Afterwards every observer is an explicit ``quantize_per_tensor -> dequantize`` pair with the
observed qparams (an average pool's output takes its input's unless calibration saw it far narrower; an int16
activation, 16-bit levels held in a qint32, is clamped to those levels before its quantize), weighted ops hold
their weight as a quantized tensor (per-tensor or per-channel, as the weight observer says), and the backend's
lowering rules (none for "reference") have rewritten the reference patterns they support into native
kernels. Every op node records what it became, or why it stayed float.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from operator import attrgetter

import torch
from torch import nn
from torch.fx import GraphModule, Node

from fxq.annotation import FLOAT_OUTPUT, info, leave_float, runs_int8
from fxq.backends import Observation, get_backend
from fxq.backends.table import NARROWER
from fxq.graph_pass import GraphPass, PassContext
from fxq.nn.fused import FusedModule
from fxq.nn.quantized.engine import using_engine
from fxq.nn.reference import WeightQuantized
from fxq.observers import Observer
from fxq.pass_registry import register_pass
from fxq.qat.recent_batches import drop_recorders
from fxq.quantize_tensor import activation_bounds, describe_qparams, quantize_weight, quantize_with
from fxq.rewriter import Rewriter, drop_unused_submodules
from fxq.shapes import VALUE_KEY, TensorInfo, value_of
from fxq.statistics import drop_statistics

_OPS = ("call_module", "call_function", "call_method")


@register_pass
@dataclass(frozen=True)
class Lower(GraphPass):
    """Observers -> quantize/dequantize, weights -> quantized tensors, then the backend's kernel rules."""

    name = "lower"
    requires = frozenset({"observed"})
    provides = frozenset({"lowered"})

    def run(self, gm: GraphModule, ctx: PassContext) -> GraphModule:
        backend = get_backend(ctx.backend)
        drop_recorders(gm)  # left by a prepare-side recorder whose convert-side reader did not run
        rw = Rewriter(gm, self.name)
        drop_statistics(rw)  # likewise
        computed: dict[str, tuple] = {}  # observer name -> qparams: a shared observer is searched once
        _share_unless_narrower(rw, backend, computed)
        for node in list(gm.graph.nodes):
            if node.op == "call_module" and isinstance(rw.modules.get(node.target), Observer):
                _quantize_dequantize(rw, node, computed)
        for node in list(gm.graph.nodes):
            if node.op in _OPS and runs_int8(info(node)):
                support = backend.support(info(node).concept)
                if support is not None and support.weighted:
                    _quantize_weight(rw, node, support)
        with using_engine(_dynamic_engine(backend.engine)):
            for node in list(gm.graph.nodes):
                precision = info(node).precision or ""
                if precision.startswith("dynamic"):
                    _lower_dynamic(rw, node)
                elif precision.startswith("weight-only"):
                    _lower_weight_only(rw, node)
        _record_status(gm)
        if backend.lowering_rules:
            read_before = {node.target for node in gm.graph.nodes if node.op == "get_attr"}
            with using_engine(backend.engine):
                rw.apply(backend.lowering_rules)  # also drops the nodes and modules the rewrites left unused
            rw.drop_unread_attributes(read_before)  # and the weights they packed into native modules
            _dequantize_to_contiguous(rw)
        else:
            gm.graph.eliminate_dead_code()
            drop_unused_submodules(gm)
        return gm


def _quantize_dequantize(rw: Rewriter, call: Node, computed: dict[str, tuple]) -> None:
    observer = rw.modules[call.target]
    value = call.args[0]
    if call.target not in computed:
        computed[call.target] = observer.calculate_qparams()
    scale, zero_point = computed[call.target]
    qparams = describe_qparams(observer, computed[call.target])
    bounds = activation_bounds(observer, scale, zero_point)
    clamp = None  # int16 levels in a qint32: torch's quantize clamps only to 32 bits, so clamp to 16 first
    if bounds is not None:
        clamp = rw.insert("call_function", torch.clamp, (value, *bounds), after=call, like=value)
    q = rw.insert("call_function", torch.quantize_per_tensor,
                  (value if clamp is None else clamp, float(scale), int(zero_point), observer.dtype),
                  after=call if clamp is None else clamp, like=value)
    dq = rw.insert("call_method", "dequantize", (q,), after=q, like=value)
    for node, role in ((clamp, "quantize"), (q, "quantize"), (dq, "dequantize")):
        if node is None:
            continue
        info(node).lowered_to = role
        info(node).qparams["output"] = qparams
        node.meta[VALUE_KEY] = value.meta.get(VALUE_KEY)
    call.replace_all_uses_with(dq)
    rw.gm.graph.erase_node(call)
    producer = info(value)
    producer.qparams.setdefault("output", qparams)


def _share_unless_narrower(rw: Rewriter, backend, computed: dict[str, tuple]) -> None:
    """Average pools observed both ways (``insert-observers``) keep their input's qparams, so native backends run
    them on the int8 tensor, unless the pool's own calibrated scale is more than NARROWER times finer: then it
    keeps its own, with the reason in ``qparams["output"]["why_own"]``."""
    replaced: dict[str, str] = {}  # the pool's own observer -> its input's
    for node in rw.gm.graph.nodes:
        support = backend.support(info(node).concept) if node.op in _OPS else None
        observers = info(node).observers
        if support is None or support.observation is not Observation.NARROWING or "input0" not in observers:
            continue
        own = observers["output"]
        shared = replaced.get(observers["input0"], observers["input0"])  # a pool after a pool that shares
        for name in (shared, own):
            if name not in computed:
                computed[name] = rw.modules[name].calculate_qparams()
        ratio = float(computed[shared][0]) / float(computed[own][0])
        if ratio <= NARROWER:
            replaced[own] = shared
            continue
        info(node).qparams["output"] = {**describe_qparams(rw.modules[own], computed[own]), "why_own": (
            f"calibration saw its output {ratio:.0f}x narrower than its input: on the input's scale it would "
            f"keep {8 - math.log2(ratio):.1f} of its 8 bits, so it has its own qparams and runs in float between "
            "a dequantize and a quantize")}
    for node in rw.gm.graph.nodes:  # shared ops after a pool (a flatten) observe with its observer too
        if node.op == "call_module" and node.target in replaced:
            node.target = replaced[node.target]
        roles = info(node).observers
        roles.update({role: replaced[name] for role, name in roles.items() if name in replaced})


def _dynamic_engine(engine: str | None) -> str | None:
    """The engine dynamic modules run on: the backend's own. A backend without kernels (reference) simulates its
    static ops in float, but a dynamic module always runs a kernel, on weights in the full 8 bits: qnnpack then
    (where the build has it), whose sums cannot overflow; fbgemm's can without VNNI (a conv + LSTM + GRU model
    read 25.9 dB on fbgemm, 49.4 dB on qnnpack)."""
    if engine is not None:
        return engine
    return "qnnpack" if "qnnpack" in torch.backends.quantized.supported_engines else None


def _lower_dynamic(rw: Rewriter, node: Node) -> None:
    """A module (or a linear call with constant weights) with a dynamic qconfig becomes its dynamic runtime module
    (weights quantized now, activations at run time)."""
    from fxq.dynamic import constant_linear_args, dynamic_module
    from fxq.nn.constant_linear import linear_from_constants

    record = info(node)
    factory = record.qconfig.weight

    def quantize_weight(weight: torch.Tensor) -> torch.Tensor:
        observer = factory()
        observer.node_name = f"{node.name} (weight)"
        observer(weight.detach().float())
        return quantize_with(observer, weight.detach().float())

    constants = constant_linear_args(node) if node.op == "call_function" else None
    if constants is not None:
        module = linear_from_constants(*(_constant(rw.gm, value) for value in constants))
    else:
        module = rw.modules[node.target]
    replacement, why = dynamic_module(module, record.qconfig.dynamic_dtype, quantize_weight)
    if replacement is None:
        leave_float(node, why)
        return
    if constants is None:
        rw.set_module(node.target, replacement)
    else:  # the call becomes a call of the new module, and the float constants go
        name = rw.unique_name(record.module_path or node.name)
        rw.set_module(name, replacement)
        node.op, node.target, node.args, node.kwargs = "call_module", name, (node.args[0],), {}
        for value in constants:
            if value is not None:
                rw.release_attribute(value)
    record.lowered_to = f"{type(replacement).__name__}({record.precision})"
    rw.stamp(node)


def _lower_weight_only(rw: Rewriter, node: Node) -> None:
    """An embedding with a weight-only qconfig becomes a ``QuantizedEmbedding`` (its table in rows of 8 or 4
    bits); an exported graph's embedding call on a constant table becomes a call of one."""
    from fxq.dynamic import constant_embedding_args
    from fxq.nn.quantized.embedding import QuantizedEmbedding

    record = info(node)
    constants = constant_embedding_args(node) if node.op == "call_function" else None
    if constants is not None:
        table, padding_idx = constants
        module = nn.Embedding.from_pretrained(_constant(rw.gm, table), padding_idx=padding_idx)
    else:
        module = rw.modules[node.target]
    try:
        replacement = QuantizedEmbedding(module, record.qconfig.weight_only_bits)
    except ValueError as err:
        leave_float(node, str(err))
        return
    if constants is None:
        rw.set_module(node.target, replacement)
    else:  # the call becomes a call of the new module; the float table goes unless another op reads it
        name = rw.unique_name(record.module_path or node.name)
        rw.set_module(name, replacement)
        node.op, node.target, node.args, node.kwargs = "call_module", name, (node.args[1],), {}
        rw.release_attribute(table)
    record.lowered_to = f"QuantizedEmbedding({record.precision})"
    rw.stamp(node)


def _quantize_weight(rw: Rewriter, node: Node, support) -> None:
    if node.op == "call_module":
        module = rw.modules[node.target]
        weight_name = "0.weight" if isinstance(module, FusedModule) else "weight"
        weight = module.get_parameter(weight_name)
    else:
        weight_node = node.args[support.weight_arg]
        weight = _constant(rw.gm, weight_node)
        if weight is None:
            info(node).declined.append(("lower", f"weight {weight_node} is computed at run time; kept float"))
            return
    observer, qparams, qweight, per_tensor_because = quantize_weight(info(node).qconfig, support, weight, node.name)
    if node.op == "call_module":
        rw.set_module(node.target, WeightQuantized(module, qweight, weight_name))
    else:
        name = rw.unique_name(f"{weight_node.target}_quantized")
        rw.gm.register_buffer(name, qweight)
        attr = rw.insert("get_attr", name, (), before=node, like=node)
        dq = rw.insert("call_method", "dequantize", (attr,), before=node, like=node)
        info(dq).lowered_to = "dequantize"
        node.replace_input_with(weight_node, dq)
        rw.release_attribute(weight_node)  # the float weight is not kept next to its int8 copy
    info(node).qparams["weight"] = describe_qparams(observer, qparams)
    if per_tensor_because:
        info(node).qparams["weight"]["why_per_tensor"] = per_tensor_because


def _dequantize_to_contiguous(rw: Rewriter) -> None:
    """Float values leaving a native kernel are made contiguous, as the float model's are.

    Native convolutions produce channels-last tensors. A float op reading one sums in another order than the
    reference graph does (its value then ties differently when requantized: "mixed" lost 5 dB to this alone),
    and a model output in channels-last breaks a caller's ``.view``. ``contiguous()`` on an already contiguous
    tensor returns it as it is, so this costs a copy only where the layout really differs. Only 4-d and 5-d
    values can be channels-last (``dequantize`` already returns lower-rank values contiguous).

    An island of elementwise ops back into int8 (dequantize -> SiLU -> quantize between two convolutions) keeps
    the kernels' layout: each value is computed alone, so the order cannot matter, and converting there cost two
    copies per island (a small EfficientNet: 1.13x of fp32's latency with them, see docs/architecture.md).
    """
    for node in list(rw.gm.graph.nodes):
        value = value_of(node)
        if (node.op == "call_method" and node.target == "dequantize" and not _is_quantize(node.args[0])
                and isinstance(value, TensorInfo) and len(value.shape) >= 4 and not _elementwise_island(node)):
            contiguous = rw.insert("call_method", "contiguous", (node,), after=node, like=node)
            info(contiguous).lowered_to = "layout"
            node.replace_all_uses_with(contiguous, delete_user_cb=lambda user, c=contiguous: user is not c)


# Float ops computing each output value from the input value at the same place alone
_ELEMENTWISE = frozenset({"relu", "relu6", "hardtanh", "gelu", "silu", "hardswish", "elu", "leaky_relu", "sigmoid",
                          "hardsigmoid", "tanh"})


def _elementwise_island(dequantize: Node) -> bool:
    """Whether every reader of ``dequantize`` is a one-input elementwise op whose value only goes back to int8."""
    return all(info(user).concept in _ELEMENTWISE and user.all_input_nodes == [dequantize]
               and user.users and all(_is_quantize(reader) for reader in user.users)
               for user in dequantize.users)


def _is_quantize(node) -> bool:
    return isinstance(node, Node) and node.op == "call_function" and node.target is torch.quantize_per_tensor


def _constant(gm: GraphModule, value) -> torch.Tensor | None:
    """The tensor a ``get_attr`` node reads; None for a value computed at run time."""
    if isinstance(value, Node) and value.op == "get_attr":
        return attrgetter(value.target)(gm)
    return None


def _record_status(gm: GraphModule) -> None:
    """Before the kernel rules: every observed op runs in reference form (float op between dequantize and
    quantize); a rule that lowers it to a kernel overwrites this, so on a native backend what keeps it is a
    reference island."""
    for node in gm.graph.nodes:
        record = info(node)
        if node.op not in _OPS or record.lowered_to is not None:
            continue
        if runs_int8(record):
            float_output = " (float output)" if record.precision == FLOAT_OUTPUT else ""
            record.lowered_to = f"reference:{record.concept}{float_output}"
        else:
            record.lowered_to = "float"
