"""``fxq bench --fuzz``: quantize seeded random models (``fxq.tools.fuzz_models``) and check the results.

Each case runs through the product's defaults (``fxq.quantize``, default QConfigMapping) and is checked for:
crashes (an ``FxqError`` that names a node or module is a refusal, anything else a crash; a ``PassError``
wraps an unexpected exception, so it is a crash), non-finite outputs, SQNR below a floor (unless plain 8-bit
rounding of the model cannot reach it either: ``fxq.tools.fuzz_oracle``), non-deterministic
outputs, a converted model that changes when its prepared model sees more data, and a user model changed by
quantizing. A failing case shrinks to a small model with the same failure and prints as a runnable script.
"""

from __future__ import annotations

import contextlib
import io
import math
import multiprocessing
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

import torch
from fxq.tools.fuzz_models import FuzzCase, Program, Value, build_model, draw_inputs, instantiate
from fxq.tools.fuzz_oracle import float32_precision, int8_ceiling

import fxq
from fxq.errors import FxqError, PassError
from fxq.metrics import sqnr_db
from fxq.nn.quantized.engine import using_engine

BACKENDS = ("reference", "x86", "qnnpack")
ENGINES = {"qnnpack": "qnnpack", "x86": "x86"}  # the quantized engine each backend's kernels run under
SQNR_FLOOR_DB = 15.0
# Below the floor, a result is wrong only if plain 8-bit rounding of the same model (``fuzz_oracle``) does better
# than this margin above it: otherwise the model is ill-conditioned for int8, which is reported, not failed.
CEILING_MARGIN_DB = 3.0
# A ceiling below 0 dB: plain rounding leaves more noise than signal (a difference of near-equal values, such as
# a map minus its transpose), so one noise level against another says nothing about fxq.
NOISE_CEILING_DB = 0.0
WEIGHT_LEVELS = {"x86": 63}  # fbgemm's 16-bit sums need 7-bit weights on CPUs without VNNI (fxq.qconfig)
FAILURES = ("crash", "nonfinite", "low_sqnr", "nondeterministic", "prepared_leak", "model_changed")


@dataclass(frozen=True)
class Finding:
    """One outcome of a check that is not plain success; ``kind`` in FAILURES, or "refused" / "invalid" /
    "ill_conditioned" (a low SQNR that plain 8-bit rounding of the model cannot beat either)."""

    seed: int
    backend: str
    kind: str
    message: str
    signature: str = ""  # what a shrunk case must still show: the kind, and for crashes the error and pass

    @property
    def is_failure(self) -> bool:
        return self.kind in FAILURES


@dataclass
class CaseResult:
    findings: list[Finding]
    sqnr: float | None  # worst output's SQNR in dB (None: no quantized output, or constant float outputs)
    seconds: float


def check_case(case: FuzzCase, backend: str, floor: float = SQNR_FLOOR_DB) -> list[Finding]:
    """Every finding of ``case`` on ``backend`` (empty: quantized fine)."""
    return run_case(case, backend, floor).findings


def run_case(case: FuzzCase, backend: str, floor: float = SQNR_FLOOR_DB) -> CaseResult:
    """Quantize ``case`` on ``backend`` and run every check, under the engine the backend's kernels need."""
    start = time.perf_counter()
    # torch.fx prints the generated code of a failing forward to stderr; the finding keeps the message
    with using_engine(ENGINES.get(backend)), torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
        findings, sqnr = _checks(case, backend, floor)
    return CaseResult(findings, sqnr, time.perf_counter() - start)


def _checks(case: FuzzCase, backend: str, floor: float) -> tuple[list[Finding], float | None]:
    def finding(kind: str, message: str, signature: str = "") -> Finding:
        return Finding(case.seed, backend, kind, message, signature or kind)

    invalid = invalid_reason(case)
    if invalid:
        return [finding("invalid", invalid)], None
    state = _state(case.model)
    expected = _outputs(case.model, case.evaluation)
    try:
        calibration = [_clone(b) for b in case.calibration]
        # the graph runtime: these checks are about quantization, and the TorchScript runtime is checked bit-exact
        # against the graph when it is installed (fxq.runtime); building it for every case would double the time
        quantized = fxq.quantize(case.model, _clone(case.example_inputs), calibration, backend=backend,
                                 runtime="graph")
    except Exception as err:  # noqa: BLE001 - every exception is an outcome to classify
        return [_classify(case, err, finding)], None
    try:
        actual = _outputs(quantized, case.evaluation)
        again = _outputs(quantized, case.evaluation)
    except Exception as err:  # noqa: BLE001 - a converted model must run on inputs like its calibration data
        return [_classify(case, err, finding, refusable=False)], None
    findings, sqnr = _compare(expected, actual, floor, finding)
    precision = float32_precision(case.model, case.evaluation) if sqnr is not None and sqnr < floor else None
    if precision is not None and precision < floor + CEILING_MARGIN_DB:
        findings.append(finding("ill_conditioned", f"SQNR {sqnr:.1f} dB; the float32 model itself reaches only "
                                                   f"{precision:.1f} dB against float64"))
    elif sqnr is not None and sqnr < floor:
        ceiling = int8_ceiling(case.model, case.calibration, case.evaluation, WEIGHT_LEVELS.get(backend, 127))
        if ceiling is not None and (sqnr >= ceiling - CEILING_MARGIN_DB or ceiling < NOISE_CEILING_DB):
            findings.append(finding("ill_conditioned", f"SQNR {sqnr:.1f} dB; plain 8-bit rounding of every value "
                                                       f"reaches {ceiling:.1f} dB"))
        else:
            culprit, where = _worst_layer(case, quantized)
            message = f"SQNR {sqnr:.1f} dB < {floor:g} dB (plain 8-bit rounding: {ceiling:.1f} dB); {where}"
            findings.append(finding("low_sqnr", message, f"low_sqnr at {culprit}"))
    if not _identical(actual, again):
        findings.append(finding("nondeterministic", "two calls on the same input gave different outputs"))
    leak = _prepared_leak(case, backend)
    if leak:
        findings.append(finding("prepared_leak", leak))
    changed = _changed(case, state, expected)
    if changed:
        findings.append(finding("model_changed", changed))
    return findings, sqnr


def invalid_reason(case: FuzzCase) -> str:
    """Why the case cannot test fxq (its float outputs are not finite, or torch.fx's trace computes something
    else than eager mode), or "". Guards the shrinker, whose edits can break the generator's invariants."""
    try:
        expected = _outputs(case.model, case.evaluation)
        traced = _outputs(torch.fx.symbolic_trace(case.model), case.evaluation)
    except Exception as err:  # noqa: BLE001
        return f"float model fails: {type(err).__name__}: {err}"
    if not all(torch.isfinite(e).all() for e in expected):
        return "float output is not finite"
    if not all(torch.allclose(e, t, rtol=1e-4, atol=1e-5) for e, t in zip(expected, traced, strict=True)):
        return "torch.fx.symbolic_trace computes a different output than eager mode"
    return ""


def _classify(case: FuzzCase, err: Exception, finding: Callable[..., Finding], refusable=True) -> Finding:
    """While quantizing, an FxqError naming one of the model's nodes or modules is a refusal; anything else,
    and any error of the converted model at run time, is a crash."""
    text = f"{type(err).__name__}: {err}"
    stage = "" if refusable else " running the converted model"
    explained = isinstance(err, FxqError) and not isinstance(err, PassError) and _names_part(case, str(err))
    if refusable and explained:
        return finding("refused", text, f"refused {type(err).__name__}")
    where = re.search(r"pass '?([\w-]+)'?", str(err)) if isinstance(err, PassError) else None
    root = err.__cause__ or err
    if root is not err:
        text += f" (caused by {type(root).__name__}: {root})"
    gist = re.sub(r"\d+", "N", " ".join(str(root).split()[:6]))  # digits vary with node names and sizes
    in_pass = f" in {where.group(1)}" if where else ""
    signature = f"crash{stage} {type(err).__name__}{in_pass}: {gist}"
    return finding("crash", text, signature)


def _names_part(case: FuzzCase, message: str) -> bool:
    names = {name for name, _ in case.model.named_modules() if name}
    names |= {node.name for node in torch.fx.symbolic_trace(case.model).graph.nodes}
    return any(re.search(rf"\b{re.escape(name)}\b", message) for name in names)


def _compare(expected, actual, floor, finding) -> tuple[list[Finding], float | None]:
    """Non-finite values where float is finite, and the worst SQNR over outputs that are not constant."""
    findings, worst = [], None
    for index, (e, a) in enumerate(zip(expected, actual, strict=True)):
        a = a.dequantize() if a.is_quantized else a
        if (torch.isfinite(e) & ~torch.isfinite(a)).any():
            findings.append(finding("nonfinite", f"output {index} is not finite where float is"))
            continue
        if e.numel() < 2 or e.std() <= 1e-6 * (1 + e.abs().max()):
            continue  # constant, or zero up to rounding (the mean of a normalized row): SQNR says nothing
        db = sqnr_db(e, a)
        worst = db if worst is None else min(worst, db)
    return findings, worst


def _worst_layer(case: FuzzCase, quantized) -> tuple[str, str]:
    """The op concept ``fxq.compare`` ranks as adding the most error, and a sentence naming its node: low
    SQNR findings group (and shrink) by that culprit, so one shrunk case stands for one cause."""
    try:
        layer = fxq.compare(case.model, quantized, [case.evaluation, *case.calibration[:2]]).worst()
    except Exception as err:  # noqa: BLE001 - the finding stands without its culprit
        return "unknown", f"fxq.compare failed: {type(err).__name__}"
    return layer.concept or "unknown", (f"worst layer {layer.node} ({layer.concept}, {layer.status}) at "
                                        f"{layer.sqnr_db:.1f} dB, {layer.own_sqnr_db:.1f} dB its own")


def _prepared_leak(case: FuzzCase, backend: str) -> str:
    """Running the prepared model after convert must not change the converted model (shared observers)."""
    mapping = fxq.get_default_qconfig_mapping(backend)
    try:  # two calibration batches suffice to have observers whose state could leak, at a quarter of the cost
        prepared = fxq.prepare(case.model, mapping, _clone(case.example_inputs), backend=backend)
        for batch in case.calibration[:2]:
            prepared(*_clone(batch))
        converted = fxq.convert(prepared, runtime="graph")
        before = _outputs(converted, case.evaluation)
        if not _identical(before, _outputs(converted, case.evaluation)):
            return ""  # non-deterministic: reported as such, and it would read as a leak here
        prepared(*[t * 4 + 1 for t in case.evaluation])
        after = _outputs(converted, case.evaluation)
    except Exception as err:  # noqa: BLE001 - quantize() passed, so prepare + convert must too
        return f"prepare/convert failed where quantize passed: {type(err).__name__}: {err}"
    if _identical(before, after):
        return ""
    return "the converted model's output changed after more data ran through the prepared model"


def _state(model: torch.nn.Module) -> tuple[bool, dict[str, torch.Tensor]]:
    return model.training, {k: v.clone() for k, v in model.state_dict().items()}


def _changed(case: FuzzCase, state, expected) -> str:
    """What quantizing changed in the user's model: training flag, state, or its float outputs."""
    training, tensors = _state(case.model)
    if training != state[0]:
        return f"model.training changed from {state[0]} to {training}"
    if tensors.keys() != state[1].keys():
        return f"state_dict keys changed: {sorted(tensors.keys() ^ state[1].keys())}"
    for key, value in tensors.items():
        if not torch.equal(value, state[1][key]):
            return f"state_dict[{key!r}] changed"
    now = _outputs(case.model, case.evaluation)
    if not _identical(now, expected):
        return "the float model's output changed"
    return ""


def _outputs(model, batch: tuple) -> list[torch.Tensor]:
    """The model's outputs as a list, on a copy of the batch (generated models may write to their input)."""
    out = model(*_clone(batch))
    return list(out) if isinstance(out, tuple) else [out]


def _identical(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(xs, ys, strict=True))


def _clone(batch: tuple) -> tuple:
    return tuple(t.clone() for t in batch)


# --- shrinking ----------------------------------------------------------------------------------------------

def with_program(case: FuzzCase, program: Program) -> FuzzCase:
    """``case`` with another program: same data, or data drawn the same way if the input's shape changed."""
    smaller = replace(case, program=program, model=instantiate(program), ops=[s.kind for s in program.stmts])
    if program.input.shape == case.program.input.shape:
        return smaller
    batches = draw_inputs(case.input_spec, program.input.shape, case.data_seed, len(case.calibration) + 2)
    return replace(smaller, example_inputs=(batches[0],), calibration=[(b,) for b in batches[1:-1]],
                   evaluation=(batches[-1],))


def shrink(case: FuzzCase, fails: Callable[[FuzzCase], bool]) -> FuzzCase:
    """A smaller case for which ``fails`` still holds: cut to one output, keep the shortest failing prefix,
    then bypass ops (their result replaced by a same-shape input) until no edit keeps the failure."""
    best = case
    while True:
        for candidate in _candidates(best.program):
            smaller = with_program(best, candidate)
            if fails(smaller):
                best = smaller
                break
        else:
            return best


def _candidates(program: Program):
    """Smaller programs, most aggressive first: single outputs of prefixes, then single-op bypasses."""
    if len(program.outputs) > 1 or len(program.stmts) > 1:
        for stmt in program.stmts:
            cut = _live(replace(program, outputs=(stmt.out.name,)))
            if len(cut.stmts) < len(program.stmts):
                yield cut
    for index in reversed(range(1, len(program.stmts))):
        rooted = _rerooted(program, index)
        if rooted is not None:
            yield rooted
    for index in reversed(range(len(program.stmts))):
        stmt = program.stmts[index]
        shapes = {s.out.name: s.out.shape for s in program.stmts} | {program.input.name: program.input.shape}
        for source in dict.fromkeys(stmt.inputs):
            if shapes[source] == stmt.out.shape:
                yield _live(_bypass(program, index, source))


def _rerooted(program: Program, index: int) -> Program | None:
    """The program from statement ``index`` on, the value it reads becoming the model's input; None if later
    statements read other earlier values. Drops shape-changing prefixes that bypassing cannot."""
    start = program.stmts[index].inputs[0]
    before = {program.input.name} | {s.out.name for s in program.stmts[:index]}
    rest = program.stmts[index:]
    if {n for s in rest for n in s.inputs} & before != {start} or set(program.outputs) & before:
        return None
    shape = next((s.out.shape for s in program.stmts[:index] if s.out.name == start), program.input.shape)
    name = program.input.name
    stmts = [replace(s, inputs=tuple(name if n == start else n for n in s.inputs)) for s in rest]
    return replace(program, input=Value(name, shape, name), stmts=stmts)


def _bypass(program: Program, index: int, source: str) -> Program:
    """The program without statement ``index``, its readers reading ``source`` instead."""
    gone = program.stmts[index].out.name
    stmts = [replace(s, inputs=tuple(source if n == gone else n for n in s.inputs))
             for i, s in enumerate(program.stmts) if i != index]
    outputs = tuple(dict.fromkeys(source if n == gone else n for n in program.outputs))
    if outputs == (program.input.name,):
        outputs = ()
    return replace(program, stmts=stmts, outputs=outputs)


def _live(program: Program) -> Program:
    """Drop statements no output depends on."""
    needed = set(program.outputs)
    kept = []
    for stmt in reversed(program.stmts):
        if stmt.out.name in needed:
            kept.append(stmt)
            needed.update(stmt.inputs)
    return replace(program, stmts=kept[::-1])


def same_failure(backend: str, signature: str, floor: float = SQNR_FLOOR_DB) -> Callable[[FuzzCase], bool]:
    """The shrinking predicate: the case still shows a finding with ``signature``."""
    def fails(case: FuzzCase) -> bool:
        return bool(case.program.stmts) and any(
            f.signature == signature for f in check_case(case, backend, floor))
    return fails


def reproducer(case: FuzzCase, finding: Finding) -> str:
    """A runnable script: the model's source, its data, the fxq call and the check that fails."""
    engine = ENGINES.get(finding.backend)
    n = len(case.calibration)
    draw = case.input_spec.replace("shape", repr(case.program.input.shape))
    lines = [f"# fxq fuzz: seed {case.seed}, backend {finding.backend!r}: {finding.kind}",
             f"# {finding.message.splitlines()[0][:300]}",
             case.source, "import fxq", "from fxq.metrics import sqnr_db", "",
             *([f"torch.backends.quantized.engine = {engine!r}"] if engine else []),
             f"g = torch.Generator().manual_seed({case.data_seed})",
             f"batches = [{draw} for _ in range({n + 2})]",
             "model = FuzzModel().eval()",
             "x = batches[-1]"]
    if finding.kind == "prepared_leak":
        lines += [f"prepared = fxq.prepare(model, fxq.get_default_qconfig_mapping({finding.backend!r}), "
                  f"(batches[0],), backend={finding.backend!r})",
                  f"for b in batches[1:{n + 1}]:", "    prepared(b.clone())",
                  "quantized = fxq.convert(prepared)", "before = quantized(x.clone())",
                  "prepared(x * 4 + 1)", "print(torch.equal(before, quantized(x.clone())))  # expected True"]
        return "\n".join(lines) + "\n"
    lines.append(f"quantized = fxq.quantize(model, (batches[0],), [(b.clone(),) for b in batches[1:{n + 1}]],"
                 f" backend={finding.backend!r})")
    if finding.kind == "nondeterministic":
        lines.append("print(torch.equal(quantized(x.clone()), quantized(x.clone())))  # expected True")
    elif finding.kind in ("low_sqnr", "nonfinite"):
        lines += ["expected, actual = model(x.clone()), quantized(x.clone())",
                  "pairs = zip(expected, actual) if isinstance(expected, tuple) else [(expected, actual)]",
                  f"print([round(sqnr_db(e, a), 1) for e, a in pairs])  # expected >= {SQNR_FLOOR_DB:g} dB"]
    elif finding.kind == "model_changed":
        lines.append("print(model.training, model(x.clone()))  # expected: False, the float output as before")
    return "\n".join(lines) + "\n"


# --- the command --------------------------------------------------------------------------------------------

def run_fuzz(count: int, backends: list[str], seed: int = 0, floor: float = SQNR_FLOOR_DB, jobs: int = 1,
             out=sys.stdout) -> int:
    """``fxq bench --fuzz``: ``count`` seeds per backend, in ``jobs`` processes; a summary, the SQNR spread, one
    shrunk reproducer per kind of failure. Non-zero exit status if anything crashed or was wrong."""
    from fxq.timing import cpu_flags_line

    print(f"{cpu_flags_line()}; {jobs} process(es) of 1 thread (the models are tiny: more threads only add "
          "overhead)", file=out)
    start = time.perf_counter()
    results = check_seeds(range(seed, seed + count), backends, floor, jobs)
    failed = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized-tensor deprecation and eval-mode notices: noise here
        for backend in backends:
            failed |= _report(backend, results[backend], floor, out)
    print(f"\n{count} models x {len(backends)} backend(s) in {time.perf_counter() - start:.0f} s", file=out)
    return 1 if failed else 0


def check_seeds(seeds: Sequence[int], backends: Sequence[str], floor: float = SQNR_FLOOR_DB,
                jobs: int = 1) -> dict[str, list[tuple[int, CaseResult]]]:
    """Each seed's model checked on each backend, in ``jobs`` processes of one thread each (the cases are
    independent and single-threaded, so two processes take about half the time on two cores); per backend,
    (seed, result) in seed order."""
    work = [(backend, seed) for backend in backends for seed in seeds]
    if jobs > 1:  # spawned, not forked: forking a process whose torch thread pools have run can hang
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_check_seed, work, [floor] * len(work), chunksize=8))
    else:
        results = [_check_seed(job, floor) for job in work]
    by_backend: dict[str, list[tuple[int, CaseResult]]] = {backend: [] for backend in backends}
    for (backend, seed), result in zip(work, results, strict=True):
        by_backend[backend].append((seed, result))
    return by_backend


def _check_seed(job: tuple[str, int], floor: float) -> CaseResult:
    backend, seed = job
    with one_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_case(build_model(seed), backend, floor)


@contextlib.contextmanager
def one_thread():
    """Run on one intra-op thread: on tensors this small, a second thread costs more than it computes, and on
    a busy machine it made each case 7x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _report(backend: str, results: list[tuple[int, CaseResult]], floor: float, out) -> bool:
    findings = [f for _, r in results for f in r.findings]
    counts = {kind: sum(f.kind == kind for f in findings) for kind in ("refused", "invalid", "ill_conditioned")
              + FAILURES}
    failing = {seed for seed, r in results if any(f.is_failure for f in r.findings)}
    db = sorted(r.sqnr for _, r in results if r.sqnr is not None)
    seconds = sum(r.seconds for _, r in results)
    print(f"\n== {backend}: {len(results)} models, {len(results) - len(failing) - counts['refused']} ok, "
          f"{counts['refused']} refused, {counts['crash']} crashed, invalid cases {counts['invalid']}, "
          f"ill-conditioned for int8 {counts['ill_conditioned']} (ok); "
          f"{seconds:.1f} s of checks ({1000 * seconds / max(len(results), 1):.0f} ms per model)", file=out)
    print("   wrong results: " + ", ".join(f"{k} {counts[k]}" for k in FAILURES[1:]), file=out)
    if db:
        spread = ", ".join(f"p{p} {_percentile(db, p):.1f}" for p in (0, 1, 5, 25, 50, 95))
        exact = sum(math.isinf(value) for value in db)
        print(f"   SQNR dB percentiles: {spread} (floor {floor:g}; {exact} bit-exact)", file=out)
    by_signature: dict[str, tuple[int, Finding, int]] = {}
    for seed, result in results:
        for f in result.findings:
            if f.is_failure:
                first, example, seen = by_signature.get(f.signature, (seed, f, 0))
                by_signature[f.signature] = (first, example, seen + 1)
    with one_thread():
        for signature, (seed, example, seen) in by_signature.items():
            case = build_model(seed)
            small = shrink(case, same_failure(backend, signature, floor))
            example = next((f for f in check_case(small, backend, floor) if f.signature == signature), example)
            print(f"\n-- {signature}: {seen} case(s); first seed {seed} ({len(case.ops)} ops) shrunk to "
                  f"{len(small.ops)} ops --\n{reproducer(small, example)}", file=out)
    return bool(by_signature)


def _percentile(sorted_values: list[float], percent: int) -> float:
    return sorted_values[min(len(sorted_values) - 1, len(sorted_values) * percent // 100)]
