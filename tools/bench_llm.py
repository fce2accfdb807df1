"""``fxq bench --llm``: decoding speed, memory and accuracy of a Llama-architecture decoder, fp32 against fxq's
int8 and int4 settings and torchao's configs of the same bits, in one run.

The model: transformers' ``LlamaForCausalLM`` with random weights (hidden 2048, 8 layers, 32 query / 4 key-value
heads, MLP 5632, vocabulary 32k: TinyLlama's shape, fewer layers), fp32, batch 1. Each variant greedily decodes
64 new tokens after a 32-token prompt with ``model.generate`` (its cache on), rounds interleaved across
variants, median reported. fxq: ``fxq.quantize_dynamic(model, "int8")`` (fbgemm's dynamic int8 Linears, 8-bit
embeddings), int8 weight-only Linears (groups of 128, fxq's int8 kernel; the accuracy side of the int8
choice), ``"int4"`` (group-128 4-bit Linears on fxq's int4 kernel, 8-bit embeddings), and where fxq's kernels
are built, the same int4 model on torch's int4 kernel for comparison; the LM head is a Linear and is
quantized in all. torchao (where installed; ``pip install torchao``), run eagerly as fxq is:
``Int8WeightOnlyConfig``, ``Int8DynamicActivationInt8WeightConfig`` and, for int4 on CPU,
``PrototypeInt4WeightOnlyConfig(group_size=128)``; these quantize the Linears (the LM head included), not the
embeddings.

Memory: the bytes each variant's weights take as ``state_dict`` stores them, and the resident memory the
process gained building it (Linux only; kernels' packed copies included). Accuracy: SQNR against fp32 of the
next-token logits along fp32's greedy continuation (each variant fed fp32's tokens one at a time with its own
cache, as decoding runs), and how many of its own 64 greedy tokens match fp32's.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import os
import statistics
import time
import warnings
from collections.abc import Callable
from unittest import mock

import torch
from tabulate import tabulate
from torch import nn

import fxq
from fxq.metrics import sqnr_db
from fxq.nn.quantized import weight_only_kernels
from fxq.timing import cpu_flags_line

SHAPE = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=8, num_attention_heads=32,
             num_key_value_heads=4, vocab_size=32000, max_position_embeddings=256, tie_word_embeddings=False)
PROMPT_TOKENS, NEW_TOKENS = 32, 64


def llama(layers: int = SHAPE["num_hidden_layers"]) -> nn.Module:
    """The benchmarked decoder, random init (seed 0)."""
    import transformers

    config = transformers.LlamaConfig(**{**SHAPE, "num_hidden_layers": layers}, bos_token_id=None,
                                      eos_token_id=None, pad_token_id=0)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def run_llm_bench(threads: int = 2, rounds: int = 3, layers: int = SHAPE["num_hidden_layers"]) -> int:
    torch.set_num_threads(threads)
    torch.backends.quantized.engine = "x86"
    warnings.simplefilter("ignore")
    try:
        import transformers  # noqa: F401
    except ImportError:
        print("fxq bench --llm needs transformers (pip install fxq[bench])")
        return 2
    before = resident_bytes()
    model = llama(layers)
    variants = {"fp32": (model, resident_bytes() - before if before else None)}
    for name, build in _builders().items():
        variants[name] = _built(build, model)
        print(f"built {name}", flush=True)
    prompt = torch.randint(0, SHAPE["vocab_size"], (1, PROMPT_TOKENS), generator=torch.Generator().manual_seed(1))
    seconds, tokens = _decode_times({name: built[0] for name, built in variants.items() if built[0] is not None},
                                    prompt, rounds)
    rows = _rows(variants, seconds, tokens, prompt)
    print(f"\n{cpu_flags_line()}\n{threads} threads; LlamaForCausalLM (random init) hidden {SHAPE['hidden_size']}, "
          f"{layers} layers, vocabulary {SHAPE['vocab_size']}, fp32, batch 1; greedy generate() of {NEW_TOKENS} "
          f"tokens after {PROMPT_TOKENS}, median of {rounds} interleaved rounds; torchao eager")
    print(tabulate(rows, headers=["variant", "tokens/s", "x fp32", "weights x fp32", "resident MB",
                                  "decode logits SQNR dB", f"tokens = fp32 (of {NEW_TOKENS})"], disable_numparse=True))
    return 0


def _builders() -> dict[str, Callable[[nn.Module], nn.Module]]:
    builders = {"fxq int8": lambda m: fxq.quantize_dynamic(m, "int8"),
                "fxq int8 weight-only (group 128)": lambda m: fxq.quantize_dynamic(
                    m, {nn.Linear: fxq.WeightOnly(8, 128), nn.Embedding: fxq.WeightOnly(8)}),
                "fxq int4 (group 128)": lambda m: fxq.quantize_dynamic(m, "int4")}
    if weight_only_kernels.available():
        builders["fxq int4, torch's kernel"] = lambda m: on_torch_int4_kernel(lambda: fxq.quantize_dynamic(m, "int4"))
    try:
        from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig
        from torchao.quantization import (
            Int8DynamicActivationInt8WeightConfig,
            Int8WeightOnlyConfig,
            quantize_,
        )
    except ImportError:
        return {**builders, "torchao int8 weight-only": None, "torchao int8 dynamic": None,
                "torchao int4 (group 128)": None}

    def torchao(config):
        def build(model):
            copied = copy.deepcopy(model)
            quantize_(copied, config)
            return copied
        return build

    return {**builders, "torchao int8 weight-only": torchao(Int8WeightOnlyConfig()),
            "torchao int8 dynamic": torchao(Int8DynamicActivationInt8WeightConfig()),
            "torchao int4 (group 128)": torchao(PrototypeInt4WeightOnlyConfig(group_size=128))}


def on_torch_int4_kernel(build: Callable[[], nn.Module]) -> nn.Module:
    """What ``build`` makes, its int4 Linears on torch's int4 kernel as on a machine where fxq's own kernel cannot
    be built: both kernels measured in one run."""
    with mock.patch.object(weight_only_kernels, "applies", lambda bits, group_size, in_features: False):
        return build()


def _built(build, model: nn.Module) -> tuple[nn.Module | None, int | None]:
    """The variant and the resident bytes it added (None where torchao is missing or /proc is not there)."""
    if build is None:
        return None, None
    _release()
    before = resident_bytes()
    variant = build(model)
    _release()
    return variant, (resident_bytes() - before) if before else None


def _decode_times(models: dict[str, nn.Module], prompt: torch.Tensor, rounds: int) -> tuple[dict, dict]:
    """Median seconds per ``generate`` call, and each variant's generated tokens."""
    samples: dict[str, list[float]] = {name: [] for name in models}
    tokens = {}
    names = list(models)
    with torch.no_grad():
        for name, model in models.items():  # warm-up: first calls allocate and pack
            tokens[name] = _generate(model, prompt)
        for index in range(rounds):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                _generate(models[name], prompt)
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}, tokens


def _generate(model: nn.Module, prompt: torch.Tensor) -> torch.Tensor:
    output = model.generate(prompt, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
    return output[0, prompt.shape[1]:]


def decode_logits(model: nn.Module, prompt: torch.Tensor, continuation: torch.Tensor) -> torch.Tensor:
    """Next-token logits (steps x vocabulary) after the prompt and after each token of ``continuation`` but the
    last, fed one at a time with the model's cache, as decoding runs."""
    with torch.no_grad():
        output = model(prompt, use_cache=True)
        steps = [output.logits[0, -1].float()]
        for token in continuation[:-1]:
            output = model(token.view(1, 1), past_key_values=output.past_key_values, use_cache=True)
            steps.append(output.logits[0, -1].float())
    return torch.stack(steps)


def _rows(variants: dict, seconds: dict, tokens: dict, prompt: torch.Tensor) -> list[list[str]]:
    reference = decode_logits(variants["fp32"][0], prompt, tokens["fp32"])
    fp32_bytes = _weight_bytes(variants["fp32"][0])
    fp32_resident = variants["fp32"][1]
    rows = []
    for name, (model, resident) in variants.items():
        if model is None:
            rows.append([name] + ["n/a (pip install torchao)"] + ["n/a"] * 5)
            continue
        logits = decode_logits(model, prompt, tokens["fp32"])
        speed = NEW_TOKENS / seconds[name]
        same = int((tokens[name] == tokens["fp32"]).sum())
        rows.append([name, f"{speed:.2f}", f"{seconds['fp32'] / seconds[name]:.2f}x",
                     f"{_weight_bytes(model) / fp32_bytes:.3f}",
                     "n/a" if resident is None else f"{resident / 2**20:,.0f}"
                     + ("" if name == "fp32" or not fp32_resident else f" ({resident / fp32_resident:.2f}x)"),
                     "-" if name == "fp32" else f"{sqnr_db(reference, logits):.1f}", str(same)])
    return rows


def _weight_bytes(model: nn.Module) -> int:
    """Bytes of the model's state_dict tensors (torchao's tensor subclasses counted by their inner data)."""
    total = 0
    for value in model.state_dict().values():
        inner = [getattr(value, name) for name in getattr(value, "tensor_data_names", ())]
        for tensor in inner or [value]:
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total


def resident_bytes() -> int | None:
    """This process's resident memory (Linux /proc), or None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


def _release() -> None:
    """Collect garbage and hand freed heap pages back to the OS, so resident memory measures what is live."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
