"""smooth: SmoothQuant (Xiao et al. 2023): move the range of a linear's outlier input channels into its weight,
where per-channel weight quantization absorbs it, so one per-tensor activation scale serves every channel.

Needs a calibrated observed graph whose linears read their input through a ``ChannelStatistics``
(``record-input-statistics``); runs before ``bias-correction`` and ``lower``. For each linear with a per-tensor
input observer, input channel j is divided by s_j = max|X_j|^a / max|W_j|^(1-a) and weight column j multiplied by
it. ``a`` comes from a grid, chosen per layer by the int8 output noise estimated from the statistics alone (see
``_noise``); no smoothing is a candidate too and wins unless a factor lowers the estimate by ``min_gain_db``. The
division is folded into a LayerNorm whose output only linears read (smoothed together with one s), or into a
linear that is the input's only producer and reader, or else is an explicit ``torch.mul`` on this input alone.
The float function is unchanged up to rounding. Afterwards the smoothed input is observed by a new min/max
observer set to the exact range of X / s, its statistics are rescaled to X / s (so bias correction stays exact),
and every touched parameter is a new one (the model's and other call sites' are never written). Each smoothed
linear records ``qparams["smoothing"]`` and a history stamp; each one left alone says why in ``declined``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from operator import attrgetter

import torch
from torch import nn
from torch.fx import GraphModule, Node

from fxq.annotation import info, leave_float, stamp
from fxq.backends import get_backend
from fxq.graph_pass import GraphPass, PassContext
from fxq.nn.fused import FusedModule
from fxq.observers import Observer
from fxq.pass_registry import register_pass
from fxq.quantize_tensor import per_tensor_like, quantize_weight
from fxq.rewriter import Declined, Rewriter
from fxq.shapes import VALUE_KEY
from fxq.statistics import ChannelStatistics

NAME = "smooth"
ALPHAS = tuple(step / 10 for step in range(11))
_LINEARS = ("linear", "linear_relu")
# Functional/aten argument positions: linear(input, weight, bias); layer_norm(input, shape, weight, bias, eps).
_LINEAR_WEIGHT, _NORM_WEIGHT = 1, 2


@dataclass
class _Site:
    """A linear that can be smoothed, with the observer and statistics calls its input passes through."""

    node: Node
    observer_call: Node
    stats_call: Node
    stats: ChannelStatistics
    observer: Observer


def _argument(node: Node, index: int, name: str):
    return node.args[index] if len(node.args) > index else node.kwargs.get(name)


def _layer(rw: Rewriter, node: Node) -> nn.Module:
    module = rw.modules[node.target]
    return module.op if isinstance(module, FusedModule) else module


def _constant(rw: Rewriter, node: Node, index: int, name: str) -> torch.Tensor | None | Declined:
    """A functional op's constant argument (None if absent); Declined if it is computed at run time."""
    value = _argument(node, index, name)
    if value is None:
        return None
    if isinstance(value, Node) and value.op == "get_attr":
        return attrgetter(value.target)(rw.gm)
    return Declined(f"the {name} {value} of {node.name} is computed at run time; there is no constant to rescale")


def _parameter(rw: Rewriter, node: Node, name: str, index: int) -> torch.Tensor | None | Declined:
    """The weight or bias of a linear/layer norm call in any spelling."""
    if node.op == "call_module":
        return getattr(_layer(rw, node), name)
    return _constant(rw, node, index + (name == "bias"), name)


def _replace(rw: Rewriter, node: Node, name: str, index: int, value: torch.Tensor, owned: set[str]) -> None:
    """Give ``node`` a new ``name`` tensor; modules are copied once first, since the model, or another call site
    sharing its Parameters, may hold them."""
    if node.op == "call_module":
        if node.target not in owned:
            rw.set_module(node.target, copy.deepcopy(rw.modules[node.target]))
            owned.add(node.target)
        layer = _layer(rw, node)
        setattr(layer, name, nn.Parameter(value, requires_grad=getattr(layer, name).requires_grad))
        return
    index += name == "bias"
    attribute = rw.unique_name(f"{node.name}_smoothed_{name}")
    rw.gm.register_buffer(attribute, value)
    attr = rw.insert("get_attr", attribute, (), before=node, like=node)
    old = _argument(node, index, name)
    if len(node.args) > index:
        node.update_arg(index, attr)
    else:
        node.update_kwarg(name, attr)
    rw.release_attribute(old)


def _site(rw: Rewriter, node: Node) -> _Site | Declined:
    record = info(node)
    stats_call = node.args[0] if node.args else None
    if not (isinstance(stats_call, Node) and stats_call.target == record.statistics["input0"]):
        return Declined("its input does not come straight from its channel statistics")
    observer_call = stats_call.args[0]
    observer = rw.modules.get(observer_call.target) if observer_call.op == "call_module" else None
    if not isinstance(observer, Observer) or observer_call.target != record.observers.get("input0"):
        return Declined("its input has no activation observer to re-range (dynamic or float input)")
    if observer.per_channel:
        return Declined("its input observer is per channel; smoothing serves a per-tensor activation scale")
    weight = _parameter(rw, node, "weight", _LINEAR_WEIGHT)
    if isinstance(weight, Declined):
        return weight
    stats = rw.modules[stats_call.target]
    channels = stats.absmax.numel()  # a CalibrationError naming the node if calibration never reached it
    if channels != weight.shape[1]:
        return Declined(f"its input statistics have {channels} channels, its weight reads {weight.shape[1]}")
    return _Site(node, observer_call, stats_call, stats, observer)


def _norm_group(rw: Rewriter, site: _Site, sites: dict[Node, _Site]) -> list[_Site] | None:
    """The linears smoothed together with ``site`` by folding into the layer norm that is their input, if that
    layer norm's output reaches nothing else and has a constant per-channel affine."""
    norm = site.observer_call.args[0]
    if not (isinstance(norm, Node) and info(norm).concept == "layer_norm" and list(norm.users) == [site.observer_call]):
        return None
    group = []
    for stats_call in site.observer_call.users:
        reader = next(iter(stats_call.users), None)
        if len(stats_call.users) != 1 or reader not in sites or sites[reader].stats_call is not stats_call:
            return None
        group.append(sites[reader])
    weight = _parameter(rw, norm, "weight", _NORM_WEIGHT)
    bias = _parameter(rw, norm, "bias", _NORM_WEIGHT)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 1 or isinstance(bias, Declined):
        return None
    return group


def _producer(rw: Rewriter, site: _Site) -> Node | None:
    """The linear whose output only this linear reads, if any: its output rows take the division."""
    producer = site.observer_call.args[0]
    if not (isinstance(producer, Node) and info(producer).concept in _LINEARS
            and list(producer.users) == [site.observer_call] and list(site.observer_call.users) == [site.stats_call]):
        return None
    weight, bias = _parameter(rw, producer, "weight", _LINEAR_WEIGHT), _parameter(rw, producer, "bias", _LINEAR_WEIGHT)
    return None if isinstance(weight, Declined) or isinstance(bias, Declined) else producer


def _factors(absmax: torch.Tensor, wmax: torch.Tensor, alpha: float) -> torch.Tensor:
    """s_j = max|X_j|^a / max|W_j|^(1-a); 1 for a channel that is zero in either (nothing to balance)."""
    usable = (absmax > 0) & (wmax > 0)
    s = absmax.clamp_min(1e-30) ** alpha / wmax.clamp_min(1e-30) ** (1 - alpha)
    return torch.where(usable, s, torch.ones_like(s))


def _ranged(observer: Observer, low: float, high: float) -> Observer:
    """A min/max observer with ``observer``'s dtype and scheme that has seen exactly [low, high]."""
    ranged = per_tensor_like(observer)
    ranged.node_name = observer.node_name
    ranged.min_val, ranged.max_val = torch.tensor(low), torch.tensor(high)
    return ranged


def _noise(site: _Site, weight: torch.Tensor, column_power: torch.Tensor, s: torch.Tensor, support) -> float:
    """Estimated int8 output noise power of a linear reading X / s with weight W * s, summed over outputs:
    d^2 / 12 * sum_j (W_ij s_j)^2 (activation rounding, d its per-tensor step) plus sum_j E[X_j^2] / s_j^2 E_ij^2
    (weight rounding error E, with the qconfig's weight observer, per channel as lower will). ``column_power``
    is sum_i W_ij^2: sums over outputs come first, so a candidate costs a weight quantization and vector ops."""
    stats = site.stats
    step = float(_ranged(site.observer, float((stats.minimum / s).min()),
                         float((stats.maximum / s).max())).calculate_qparams()[0])
    scaled = weight * s.float()
    error = quantize_weight(info(site.node).qconfig, support, scaled, site.node.name).qweight.dequantize() - scaled
    activation = step ** 2 / 12 * float((column_power * s ** 2).sum())
    return activation + float((stats.second_moment / s ** 2 * error.pow(2).sum(0).double()).sum())


def _choose(weights: list[torch.Tensor], group: list[_Site], backend, min_gain_db: float):
    """(alpha or None, s, estimated noise by candidate); one s for the whole group, chosen on its total noise."""
    absmax = group[0].stats.absmax
    wmax = torch.cat(weights).abs().amax(0).double()
    candidates = {None: torch.ones_like(absmax)}
    candidates.update({alpha: _factors(absmax, wmax, alpha) for alpha in ALPHAS})
    layers = [(site, weight, weight.double().pow(2).sum(0), backend.support(info(site.node).concept))
              for site, weight in zip(group, weights, strict=True)]
    noise = {alpha: sum(_noise(*layer[:3], s, layer[3]) for layer in layers) for alpha, s in candidates.items()}
    best = min(ALPHAS, key=lambda alpha: noise[alpha])
    if noise[best] < noise[None] * 10 ** (-min_gain_db / 10):
        return best, candidates[best], noise
    return None, candidates[None], noise


def _retarget_observer(rw: Rewriter, site: _Site, observer: Observer, owner: Node) -> str:
    """Point the observer call ``site`` reads (which only smoothed values pass) at ``observer``."""
    old = site.observer_call.target
    name = rw.unique_name(f"{old}_smoothed")
    rw.gm.add_submodule(name, observer)
    rw.modules[name] = observer
    site.observer_call.target = name
    if info(owner).observers.get("output") == old:
        info(owner).observers["output"] = name
    return name


def _divide_by_mul(rw: Rewriter, site: _Site, s: torch.Tensor, observer: Observer) -> str:
    """x -> mul(x, 1/s) -> new observer -> this linear's statistics; other readers keep x and its observer."""
    value, old = site.observer_call.args[0], site.observer_call
    buffer = rw.unique_name(f"{site.node.name}_inverse_smoothing")
    rw.gm.register_buffer(buffer, 1 / s)
    attr = rw.insert("get_attr", buffer, (), before=site.stats_call, like=site.node)
    mul = rw.insert("call_function", torch.mul, (value, attr), before=site.stats_call, like=site.node)
    name = rw.unique_name(f"obs_{mul.name}")
    rw.gm.add_submodule(name, observer)
    rw.modules[name] = observer
    call = rw.insert("call_module", name, (mul,), before=site.stats_call, like=site.node)
    for node in (mul, call):
        node.meta[VALUE_KEY] = value.meta.get(VALUE_KEY)
    leave_float(mul, f"divides {site.node.name}'s input by its smoothing factors; the observer after it quantizes "
                     "the result")
    site.stats_call.replace_input_with(old, call)
    site.observer_call = call
    if not old.users:
        rw.gm.graph.erase_node(old)
        if info(value).observers.get("output") == old.target and not any(
                n.op == "call_module" and n.target == old.target for n in rw.gm.graph.nodes):
            del info(value).observers["output"]
            leave_float(value, f"its only reader, {site.node.name}, reads it divided by smoothing factors, "
                               "quantized after the division")
    return name


def _rescale_statistics(rw: Rewriter, site: _Site, s: torch.Tensor) -> None:
    """New statistics of X / s, for passes after this one (bias correction reads E[x])."""
    old, s = site.stats, s.double()
    new = ChannelStatistics(old.axis)
    new.node_name = old.node_name
    new.count = old.count.clone()
    new.sum, new.sum_of_squares = old.sum / s, old.sum_of_squares / s ** 2
    new.min_val, new.max_val = old.min_val / s, old.max_val / s
    name = rw.unique_name(f"{site.stats_call.target}_smoothed")
    rw.gm.add_submodule(name, new)
    rw.modules[name] = new
    site.stats_call.target = name
    info(site.node).statistics["input0"] = name


def _smooth(rw: Rewriter, group: list[_Site], placement: str, backend, min_gain_db: float, owned: set[str]) -> None:
    weights = [_parameter(rw, site.node, "weight", _LINEAR_WEIGHT).detach() for site in group]
    alpha, s, noise = _choose(weights, group, backend, min_gain_db)
    names = ", ".join(site.node.name for site in group)
    if alpha is None:
        best = min(ALPHAS, key=lambda a: noise[a])
        reason = (f"no smoothing factor lowers the estimated output noise by {min_gain_db} dB (best: alpha {best}, "
                  f"{noise[best]:.3g} against {noise[None]:.3g} unsmoothed)")
        for site in group:
            together = f"; weighed together with {names}, which share its layer norm" if len(group) > 1 else ""
            info(site.node).declined.append((NAME, reason + together))
        return
    stats = group[0].stats
    ranged = _ranged(group[0].observer, float((stats.minimum / s).min()), float((stats.maximum / s).max()))
    factors = s.float()
    source = group[0].observer_call.args[0]
    if placement == "layer_norm":
        _replace(rw, source, "weight", _NORM_WEIGHT,
                 _parameter(rw, source, "weight", _NORM_WEIGHT).detach() / factors, owned)
        bias = _parameter(rw, source, "bias", _NORM_WEIGHT)
        if bias is not None:
            _replace(rw, source, "bias", _NORM_WEIGHT, bias.detach() / factors, owned)
        observer = _retarget_observer(rw, group[0], ranged, source)
    elif placement == "linear":
        weight = _parameter(rw, source, "weight", _LINEAR_WEIGHT).detach()
        _replace(rw, source, "weight", _LINEAR_WEIGHT, weight / factors[:, None], owned)
        bias = _parameter(rw, source, "bias", _LINEAR_WEIGHT)
        if bias is not None:
            _replace(rw, source, "bias", _LINEAR_WEIGHT, bias.detach() / factors, owned)
        observer = _retarget_observer(rw, group[0], ranged, source)
    else:
        observer = _divide_by_mul(rw, group[0], factors, ranged)
    summary = {"alpha": alpha, "scale_min": float(s.min()), "scale_max": float(s.max()), "placement": placement}
    gain = 10 * torch.log10(torch.tensor(noise[None] / noise[alpha])).item()
    where = {"layer_norm": f"into layer norm {source.name}", "linear": f"into the output rows of {source.name}",
             "mul": "by an explicit mul on this input"}[placement]
    for site, weight in zip(group, weights, strict=True):
        _replace(rw, site.node, "weight", _LINEAR_WEIGHT, weight * factors, owned)
        _rescale_statistics(rw, site, s)
        info(site.node).observers["input0"] = observer
        info(site.node).qparams["smoothing"] = dict(summary)
        stamp(site.node, NAME, f"alpha {alpha}: input / s {where}, weight columns * s, s "
                               f"{summary['scale_min']:.3g}..{summary['scale_max']:.3g}, estimated output noise "
                               f"-{gain:.1f} dB")


@register_pass
@dataclass(frozen=True)
class Smooth(GraphPass):
    """SmoothQuant per linear, with its alpha chosen from the calibration statistics (see the module docstring).
    The statistics stay, rescaled to the smoothed inputs, for a later ``bias-correction``; ``lower`` drops any
    that remain.

    Attributes:
        min_gain_db: smooth only when the best factor lowers the estimated output noise by at least this much.
            Gaussian inputs without outliers estimate 0.5-1.6 dB (s evens out which channel's calibration
            extreme happened to be largest, which new data does not repeat); 3 of 64 channels 50x the rest,
            5-11 dB.    """

    name = NAME
    requires = frozenset({"observed", "input_statistics"})
    provides = frozenset({"smoothed"})
    preserves_numerics = True
    min_gain_db: float = 3.0

    def run(self, gm: GraphModule, ctx: PassContext) -> GraphModule:
        backend = get_backend(ctx.backend)
        rw = Rewriter(gm, self.name)
        sites: dict[Node, _Site] = {}
        for node in gm.graph.nodes:
            record = info(node)
            if "input0" not in record.statistics or record.concept not in _LINEARS:
                continue
            found = _site(rw, node)
            if isinstance(found, Declined):
                record.declined.append((NAME, found.reason))
            else:
                sites[node] = found
        owned: set[str] = set()
        done: set[Node] = set()
        for node, site in list(sites.items()):
            if node in done:
                continue
            group = _norm_group(rw, site, sites)
            placement = "layer_norm" if group else "linear" if _producer(rw, site) is not None else "mul"
            group = group or [site]
            done.update(member.node for member in group)
            _smooth(rw, group, placement, backend, self.min_gain_db, owned)
        return gm
