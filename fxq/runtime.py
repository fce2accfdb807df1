"""How a converted model runs its calls: "graph" or "torchscript".

"graph" is the GraphModule's generated Python: one interpreter step per op, which on small or depthwise-heavy
models costs more than the int8 kernels save (MobileNetV2: 0.29x of fp32 eager; its frozen TorchScript: 0.17x,
bit-identical). "torchscript" runs a frozen TorchScript copy of the graph instead (``torch.jit.freeze`` of
``torch.jit.script``): the same kernels, without Python between them.

The GraphModule stays what fxq returns, because the dump tool, ``fxq.inspect`` and the report read its node
records: ``ConvertedGraphModule.__call__`` asks ``runner`` for the installed runtime. The choice is recorded in
``gm.meta["fxq_runtime"]`` (plain data, so it survives ``copy.deepcopy`` and ``fxq.save``); the built TorchScript
copy is a cache beside the module, rebuilt on the next call after a copy, a load or a ``recompile``
(``invalidate``). It holds its own copy of the weights (frozen constants): weights changed in place other than
through ``load_state_dict`` need ``install_runtime`` again.

"auto" keeps the torchscript runtime only if it computes exactly what the graph does on the example inputs and
is faster on them: a few calls each, interleaved.
"""

from __future__ import annotations

import inspect
import re
import time
import warnings
import weakref
from collections.abc import Callable

import torch
from torch import nn
from torch.fx import CodeGen, Graph, GraphModule
from torch.utils import _pytree as pytree

from fxq.errors import ConfigError
from fxq.input_guard import first_sentence, recorded_inputs
from fxq.shapes import TensorInfo
from fxq.timing import time_interleaved

RUNTIMES = ("auto", "graph", "torchscript")
RUNTIME_KEY = "fxq_runtime"
EXAMPLES_KEY = "fxq_example_inputs"
EXAMPLES_MAX_BYTES = 1 << 20  # prepare keeps example inputs up to this size (an ImageNet image is 0.6 MB)
_EXPORT_GUARDS = "_guards_fn"  # the input-size checks torch.export adds: Python, so run beside the TorchScript copy
_TIMED_ROUNDS = 3  # after one untimed call each: enough to tell runtimes apart that differ by >10%

_built: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> its runtime's callable (None: graph)


def check_runtime_name(name: str) -> None:
    if name not in RUNTIMES:
        raise ConfigError(f"runtime={name!r} is not a runtime; use one of {list(RUNTIMES)}")


def install_runtime(gm: GraphModule, name: str = "auto", example_inputs: tuple | None = None) -> dict:
    """Build runtime ``name`` ("auto", "graph" or "torchscript") for the converted ``gm`` and record the choice
    in ``gm.meta["fxq_runtime"]`` ({"name", "why"} and, when measured, milliseconds per call of each).

    The TorchScript copy is checked against the graph on ``example_inputs`` (default: those ``fxq.prepare``
    kept, else inputs made from what it recorded); a copy TorchScript cannot compile, or that computes anything
    else, leaves the graph runtime in place, with the reason as "why".

    Raises:
        ConfigError: an unknown runtime name.
    """
    check_runtime_name(name)
    if name == "graph":
        return _record(gm, "graph", "asked for", None)
    start = time.perf_counter()
    try:
        run = call_like(gm, frozen_script(gm))
    except Exception as err:
        return _record(gm, "graph", f"TorchScript cannot compile this model: {compile_error(err)}", None)
    built_s = time.perf_counter() - start
    inputs = example_inputs if example_inputs is not None else example_inputs_of(gm)
    if inputs is None:  # (an input that was not a tensor)
        if name == "auto":
            return _record(gm, "graph", "no example inputs to check the TorchScript copy on", None)
        return _record(gm, "torchscript", "asked for; not checked (no example inputs)", run, built_s=built_s)
    try:
        problem = difference(gm, run, inputs)
    except Exception as err:
        return _record(gm, "graph", f"the example inputs failed ({type(err).__name__}: {first_sentence(err)})", None)
    if problem:
        return _record(gm, "graph", f"the TorchScript copy computes other values than the graph: {problem}", None)
    if name == "torchscript":
        return _record(gm, "torchscript", "asked for; bit-exact on the example inputs", run, built_s=built_s)
    times = time_interleaved({"graph": lambda: _graph_call(gm, inputs), "torchscript": lambda: run(*inputs)},
                             rounds=_TIMED_ROUNDS, warmup=1)
    faster, slower = sorted(times, key=times.get)
    why = (f"bit-exact on the example inputs; {faster} {times[faster]:.3g} ms per call, {slower} "
           f"{times[slower]:.3g} ms")
    return _record(gm, faster, why, run if faster == "torchscript" else None, built_s=built_s,
                   **{f"{key}_ms": value for key, value in times.items()})


def runner(gm: GraphModule) -> Callable | None:
    """The callable of ``gm``'s recorded runtime (built on first use), or None for the graph's own forward."""
    try:
        return _built[gm]
    except KeyError:
        pass
    record = gm.meta.get(RUNTIME_KEY)
    if record is None or record["name"] == "graph":
        _built[gm] = None
        return None
    try:  # checked when it was chosen; a copy or a loaded model rebuilds it unchecked
        _built[gm] = call_like(gm, frozen_script(gm))
    except Exception as err:
        _record(gm, "graph", f"rebuilding the TorchScript copy failed: {compile_error(err)}", None)
    return _built[gm]


def invalidate(gm: GraphModule) -> None:
    """Forget ``gm``'s built runtime (its graph or weights changed); the next call rebuilds it."""
    _built.pop(gm, None)


def frozen_script(gm: GraphModule) -> torch.jit.ScriptModule:
    """A frozen TorchScript copy of ``gm``'s graph, taking its flat tensor inputs and returning the flat outputs.

    Graphs from ``torch.export`` need a rewrite first: their inputs and outputs go through pytree code, their
    ops are overloads (``aten.add.Tensor``) that TorchScript names by packet (``aten.add``), and their input-size
    guards are Python (see ``call_like``).
    """
    graph = Graph()  # with plain arguments and results (CodeGen), not pytree code
    graph.output(graph.graph_copy(gm.graph, {}))
    for node in list(graph.nodes):
        node.meta = {}  # records are for people reading the GraphModule; copying them costs time
        if node.op == "call_module" and node.target == _EXPORT_GUARDS:
            graph.erase_node(node)
        elif node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            packet = node.target.overloadpacket
            node.target = torch.ops.aten.size if packet is torch.ops.aten.sym_size else packet
    # gm's own modules, not copies: freezing inlines their packed weights by reference, so the frozen copy adds
    # no second set of weights (ResNet-18 x86: +1 MB instead of +13 MB); gm is left as it was
    flat = GraphModule(gm, graph)
    flat.eval()
    with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript: see docs/runtime.md
        warnings.filterwarnings("ignore", r"`torch\.jit\.(script|freeze)` is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", message="The TorchScript type system doesn't support instance-level")
        return torch.jit.freeze(torch.jit.script(flat))


def call_like(gm: GraphModule, module: torch.jit.ScriptModule) -> Callable:
    """``module`` (``frozen_script(gm)``) taking and returning what ``gm`` does (pytree inputs, a model-output
    class), with torch.export's input-size guards run first."""
    codegen = gm.graph._codegen
    guards = getattr(gm, _EXPORT_GUARDS, None)
    if type(codegen) is CodeGen and guards is None:
        return module
    signature = inspect.signature(gm.forward)
    guard_args = _guard_arguments(gm)

    def run(*args, **kwargs):
        if kwargs:
            args = signature.bind(*args, **kwargs).args
        flat = codegen.process_inputs(*args)
        if guards is not None:
            guards(*(flat[value] if is_input else value for is_input, value in guard_args))
        return codegen.process_outputs(module(*flat))

    return run


def _guard_arguments(gm: GraphModule) -> list:
    """What the graph passes its input guards: (True, index of a graph input) or (False, a constant: an argument
    capture fixed, such as ``use_cache=False``)."""
    inputs = {node: index for index, node in enumerate(gm.graph.find_nodes(op="placeholder"))}
    calls = gm.graph.find_nodes(op="call_module", target=_EXPORT_GUARDS)
    return [(True, inputs[arg]) if arg in inputs else (False, arg) for arg in calls[0].args] if calls else []


def compile_error(err: Exception) -> str:
    """TorchScript's complaint and the first place in Python code it names (the module to change)."""
    place = re.search(r'File "([^"]+)", line (\d+)', str(err))
    where = f" at {place[1]}:{place[2]}" if place else ""
    return f"{type(err).__name__}{where}: {first_sentence(err).rstrip(':')}"


def _record(gm: GraphModule, name: str, why: str, run: Callable | None, **timings: float) -> dict:
    record = {"name": name, "why": why, **{key: round(value, 4) for key, value in timings.items()}}
    gm.meta[RUNTIME_KEY] = record
    _built[gm] = run
    return record


def _graph_call(gm: GraphModule, inputs: tuple):
    return nn.Module.__call__(gm, *inputs)  # the generated forward, never the installed runtime


def difference(gm: GraphModule, run: Callable, inputs: tuple) -> str | None:
    """How the two runtimes' outputs on ``inputs`` differ, or None if they are identical (NaN equal to NaN)."""
    with torch.no_grad():
        expected, got = pytree.tree_flatten(_graph_call(gm, inputs)), pytree.tree_flatten(run(*inputs))
    if expected[1] != got[1]:
        return f"outputs structured as {got[1]}, not {expected[1]}"
    try:
        for want, have in zip(expected[0], got[0], strict=True):
            torch.testing.assert_close(have, want, rtol=0, atol=0, equal_nan=True)
    except AssertionError as err:
        return " ".join(str(err).split())
    return None


def example_inputs_of(gm: GraphModule) -> tuple | None:
    """The example inputs ``fxq.prepare`` kept, else inputs like the recorded ones (normal floats; zeros for
    integers, valid as indices), or None when an input was not a tensor."""
    kept = gm.meta.get(EXAMPLES_KEY)
    if kept is not None:
        return kept
    records = [record for _, record in recorded_inputs(gm)]
    if not records or not all(isinstance(record, TensorInfo) for record in records):
        return None
    generator = torch.Generator().manual_seed(0)
    return tuple(torch.randn(r.shape, generator=generator).to(r.dtype) if r.dtype.is_floating_point
                 else torch.zeros(r.shape, dtype=r.dtype) for r in records)


def keep_examples(example_inputs: tuple) -> tuple | None:
    """A copy of ``example_inputs`` for ``meta["fxq_example_inputs"]`` if they are tensors of at most
    ``EXAMPLES_MAX_BYTES`` in all (what "auto" checks the TorchScript copy on), else None."""
    if not all(isinstance(value, torch.Tensor) for value in example_inputs):
        return None
    if sum(value.numel() * value.element_size() for value in example_inputs) > EXAMPLES_MAX_BYTES:
        return None
    return tuple(value.detach().clone() for value in example_inputs)
