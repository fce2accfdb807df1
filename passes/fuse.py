"""fuse: merge conv/linear with the batch norm and ReLU after them, for inference.

Needs a normalized graph (concepts named, no in-place ops) from a model in eval mode, and the example inputs
(a linear's batch norm folds only where the value is 2-d, known by running them). Afterwards batch norms that
follow a conv or linear are folded into its weights, and a ReLU after a conv, linear or lone batch norm is
merged with it into one fused module (``fxq.nn.fused``), called at the first member's path; ``relu(a + b)``
and ``relu(a * b)`` become one ``fxq.nn.functional`` call. For quantization-aware training (``ctx.training``)
a conv's or linear's batch norm is not folded but kept with it (and its ReLU) in one unit (``fxq.nn.fused.LAYER_BN``),
so training can update its statistics; ``fxq.qat`` simulates the folding, ``qat-to-float`` does it at convert.
Functional forms are left alone, with the reason recorded as a near miss. The backend's own fusion rules
(``Backend.fusion_rules``) are tried first. (A module called more than once is one module per call after normalize, so each call
fuses with its own neighbours.)
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.fx import GraphModule, Node

from fxq.annotation import info
from fxq.backends import get_backend
from fxq.graph_pass import GraphPass, PassContext
from fxq.nn.fold import fold_batch_norm
from fxq.nn.functional import add_relu, mul_relu
from fxq.nn.fused import fused_with_relu, layer_bn_unit
from fxq.pass_registry import register_pass
from fxq.pattern import Pattern
from fxq.rewriter import Declined, Rewriter, Rule
from fxq.shapes import TensorInfo, propagate, value_of


def conv_bn_relu(rw: Rewriter, op: Node, bn: Node, relu: Node) -> Node | Declined:
    """Fold the batch norm into the conv, then fuse the ReLU."""
    folded = conv_bn(rw, op, bn)
    return folded if isinstance(folded, Declined) else op_relu(rw, op, relu)


def conv_bn(rw: Rewriter, op: Node, bn: Node) -> Node | Declined:
    """Replace the conv (or linear) with a copy whose weights include the batch norm."""
    problem = _conv_bn_problem(rw, op, bn)
    if problem:
        return Declined(problem)
    rw.set_module(op.target, fold_batch_norm(rw.modules[op.target], rw.modules[bn.target]))
    _merge(rw, op, bn)
    return op


def layer_bn_kept(rw: Rewriter, op: Node, bn: Node, relu: Node | None = None) -> Node | Declined:
    """For training: the conv or linear, its batch norm (and ReLU) as one unit, the norm still a norm (``fxq.qat`` trains
    it with its statistics updating; ``qat-to-float`` folds it at convert)."""
    problem = _conv_bn_problem(rw, op, bn) or (relu is not None and _not_fusable(rw, relu, None))
    if problem:
        return Declined(problem)
    relu_module = rw.modules[relu.target] if relu is not None else None
    rw.set_module(op.target, layer_bn_unit(rw.modules[op.target], rw.modules[bn.target], relu_module))
    for member in (bn, relu):
        if member is not None:
            _merge(rw, op, member)
    return op


def _conv_bn_problem(rw: Rewriter, op: Node, bn: Node) -> str | None:
    """Why the batch norm cannot be folded into the conv (or linear) before it, or None."""
    problem = _not_fusable(rw, op, bn)
    if problem:
        return problem
    layer, norm = rw.modules[op.target], rw.modules[bn.target]
    if isinstance(layer, nn.Linear) and _rank(op) != 2:
        return (f"{op.name}'s output has rank {_rank(op)}: a linear's features are its last dimension, and "
                f"{bn.name} normalises dimension 1, so folding would scale the wrong values")
    if norm.num_features != layer.weight.shape[0]:
        return f"{bn.name} normalises {norm.num_features} features but {op.name} has {layer.weight.shape[0]} outputs"
    if norm.running_mean is None:
        return f"{bn.name} has no running statistics to fold (track_running_stats=False)"
    return None


def op_relu(rw: Rewriter, op: Node, relu: Node) -> Node | Declined:
    """Wrap the op's module and a ReLU in one fused module at the op's path."""
    problem = _not_fusable(rw, op, None)
    if problem:
        return Declined(problem)
    module = rw.modules[op.target]
    fused_type = fused_with_relu(module)
    if fused_type is None:
        return Declined(f"{type(module).__name__} has no fused form with ReLU")
    rw.set_module(op.target, fused_type(module, nn.ReLU()))
    _merge(rw, op, relu)
    return op


def elementwise_relu(rw: Rewriter, op: Node, relu: Node) -> Node | Declined:
    """Replace ``relu(a + b)`` (or ``*``) with one ``add_relu(a, b)`` call: one observer, one kernel."""
    if len(op.args) != 2 or op.kwargs:
        return Declined(f"{op.name} has extra arguments ({op.format_node()}); only a plain a+b / a*b fuses")
    fused_function = FUSED_ELEMENTWISE[info(op).concept]
    node = rw.insert("call_function", fused_function, tuple(op.args), before=relu, like=op)
    record = info(node)
    record.concept = f"{info(op).concept}_relu"
    record.fused_from = (op.name, relu.name)
    record.fused_group = "+".join(record.fused_from)
    record.source_target = op.target
    record.origin = info(relu).origin
    return node


def _not_fusable(rw: Rewriter, op: Node, other: Node | None) -> str | None:
    for node in (op, other):
        if node is None:
            continue
        if node.op != "call_module":
            return f"{node.name} is a {node.op.replace('_', ' ')}; only module forms are fused"
        if rw.modules[node.target].training:
            return f"module {node.target!r} is in training mode; fusion for inference needs eval mode"
    return None


def _linear_feeds_batch_norm(gm: GraphModule) -> bool:
    """Whether any Linear module's output goes to a BatchNorm1d module: only then are ranks worth a run of the
    example inputs (insert-observers runs them anyway; on a 4,000-node graph one run is ~15% of prepare)."""
    modules = dict(gm.named_modules())
    return any(node.op == "call_module" and isinstance(modules.get(node.target), nn.Linear)
               and any(user.op == "call_module" and isinstance(modules.get(user.target), nn.BatchNorm1d)
                       for user in node.users)
               for node in gm.graph.nodes)


def _rank(node: Node) -> int | None:
    value = value_of(node)
    return len(value.shape) if isinstance(value, TensorInfo) else None


def _merge(rw: Rewriter, keep: Node, gone: Node) -> None:
    """``gone``'s value is now computed by ``keep``: rewire its users and record the group on ``keep``."""
    gone.replace_all_uses_with(keep)
    record, other = info(keep), info(gone)
    record.fused_from = (record.fused_from or (keep.name,)) + (other.fused_from or (gone.name,))
    record.fused_group = "+".join(record.fused_from)
    record.origin = other.origin  # keep now computes gone's value
    record.concept = getattr(rw.modules[keep.target], "fxq_concept", record.concept)
    rw.stamp(keep)
    rw.gm.graph.erase_node(gone)


FUSED_ELEMENTWISE = {"add": add_relu, "mul": mul_relu}
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NAMES = ("op", "bn", "relu")

_FOLD_CONV_BN = [
    # conv -> batch norm -> relu: fold the norm, fuse the relu
    *[Rule(Pattern.chain(conv, "batch_norm", "relu", names=_NAMES), conv_bn_relu, "conv+bn+relu") for conv in _CONVS],
    # conv -> batch norm: fold the norm into the conv's weights
    *[Rule(Pattern.chain(conv, "batch_norm", names=_NAMES[:2]), conv_bn, "conv+bn") for conv in _CONVS],
]
# for quantization-aware training: conv/linear + batch norm (+ relu) kept as one unit, the norm still a norm
_KEEP_LAYER_BN = [
    *[Rule(Pattern.chain(conv, "batch_norm", "relu", names=_NAMES), layer_bn_kept, "conv+bn+relu, training")
      for conv in _CONVS],
    *[Rule(Pattern.chain(conv, "batch_norm", names=_NAMES[:2]), layer_bn_kept, "conv+bn, training")
      for conv in _CONVS],
    Rule(Pattern.chain(nn.Linear, nn.BatchNorm1d, "relu", names=_NAMES), layer_bn_kept, "linear+bn1d+relu, training"),
    Rule(Pattern.chain(nn.Linear, nn.BatchNorm1d, names=_NAMES[:2]), layer_bn_kept, "linear+bn1d, training"),
]
# linear -> batch norm 1d: fold the norm into the linear's weights
_FOLD_LINEAR_BN = [Rule(Pattern.chain(nn.Linear, nn.BatchNorm1d, names=_NAMES[:2]), conv_bn, "linear+bn1d")]
_THE_REST = [
    # conv/linear -> relu: one fused module so one kernel runs both
    *[Rule(Pattern.chain(op, "relu", names=("op", "relu")), op_relu, "op+relu") for op in (*_CONVS, nn.Linear)],
    # a + b -> relu, a * b -> relu: one fused call, observed once after the relu
    Rule(Pattern.chain("add", "relu", names=("op", "relu")), elementwise_relu, "add+relu"),
    Rule(Pattern.chain("mul", "relu", names=("op", "relu")), elementwise_relu, "mul+relu"),
    # batch norm -> relu (no conv before it): fused too
    Rule(Pattern.chain("batch_norm", "relu", names=("op", "relu")), op_relu, "bn+relu"),
]
RULES = [*_FOLD_CONV_BN, *_FOLD_LINEAR_BN, *_THE_REST]
TRAINING_RULES = [*_KEEP_LAYER_BN, *_THE_REST]


@register_pass
@dataclass(frozen=True)
class Fuse(GraphPass):
    """Fold batch norms and fuse ReLUs (see the module docstring)."""

    name = "fuse"
    requires = frozenset({"normalized"})
    provides = frozenset({"fused"})
    preserves_numerics = True

    def run(self, gm: GraphModule, ctx: PassContext) -> GraphModule:
        if ctx.example_inputs and _linear_feeds_batch_norm(gm):  # ranks decide whether it folds (conv_bn)
            propagate(gm, ctx.example_inputs)
        backend_rules = list(get_backend(ctx.backend).fusion_rules)  # first: a longer pattern it knows wins
        Rewriter(gm, self.name).apply(backend_rules + (TRAINING_RULES if ctx.training else RULES))
        return gm
