"""The MiniLM part of ``fxq bench --qat``: real all-MiniLM-L6-v2, every Linear int8, trained by distillation from
the float model on sentence embeddings, then converted; mean cosine with float on held-out sentences.

Training text: the standard library's docstrings (``docstring_corpus``; no labels needed, the teacher's outputs
are the targets). Loss: 1 - cosine between student and teacher per token and per mean-pooled embedding
(``fxq.qat.feature_distillation_loss``). The held-out sentences are everyday English the training never saw.
Two mappings: fxq's defaults (the transformer recipe keeps the residual stream float) and ``recipe="none"``
(residual adds and layer norms int8 too).
"""

from __future__ import annotations

import copy
import random
import statistics
import time

import torch
from fxq.tools.bench_minilm import (
    CALIBRATION_SENTENCES,
    _Positional,
    embeddings,
    last_hidden,
    load_minilm,
    mean_pooled,
)
from fxq.tools.docstring_corpus import docstring_sentences
from fxq.tools.sentences import HELD_OUT_SENTENCES, SENTENCES

import fxq
from fxq.qat import feature_distillation_loss

STEPS, BATCH, MAX_TOKENS = 200, 16, 64
# Adam's learning rate per mapping: a student already within 1% of its teacher needs small steps (5e-5; 2e-4
# did no better); one with int8 residual streams has further to go (1e-4; 1e-3 diverged: 0.75 after 75 steps).
LR = {"auto": 5e-5, "none": 1e-4}


def minilm_qat_rows(recipes: tuple[str, ...] = ("auto", "none")) -> list[list[str]] | None:
    """One row per recipe: static PTQ and QAT + distillation held-out cosines, the training time and the time
    per step against a float training step; None without MiniLM."""
    loaded = load_minilm()
    if loaded is None:
        return None
    tokenizer, teacher = loaded
    reference = embeddings(_Positional(teacher), tokenizer, True, HELD_OUT_SENTENCES)
    encoded = tokenizer(SENTENCES[:CALIBRATION_SENTENCES], padding="max_length", max_length=MAX_TOKENS,
                        truncation=True, return_tensors="pt")
    calibration = list(zip(encoded["input_ids"].split(8), encoded["attention_mask"].split(8), strict=True))
    corpus = docstring_sentences()
    float_step_s = _float_step(teacher, tokenizer, corpus)
    rows = []
    for recipe in recipes:
        ptq = fxq.quantize(teacher, calibration[0], calibration, backend="x86", capture="auto", recipe=recipe)
        student = fxq.prepare_qat(teacher, None, calibration[0], capture="auto", recipe=recipe)
        start = time.perf_counter()
        step_s = _distill(student, teacher, tokenizer, corpus, LR[recipe])
        train_s = time.perf_counter() - start
        converted = fxq.convert(student.eval())
        cosine = [f"{_held_out_cosine(model, tokenizer, reference):.4f}" for model in (ptq, converted)]
        rows.append([f'recipe="{recipe}"', *cosine, f"{LR[recipe]:g}", f"{train_s:.0f} s", f"{step_s * 1000:.0f}",
                     f"{step_s / float_step_s:.2f}"])
    return rows


def describe() -> str:
    return (f"MiniLM QAT + distillation: {STEPS} steps of {BATCH} docstring sentences (<= {MAX_TOKENS} tokens), "
            f"Adam; cosine with float on {len(HELD_OUT_SENTENCES)} held-out sentences; every Linear int8")


def _distill(student, teacher, tokenizer, corpus: list[str], lr: float) -> float:
    """Train ``student`` towards ``teacher``'s token states and pooled embeddings; the median seconds per step."""
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    sampler, times = random.Random(0), []
    for _ in range(STEPS):
        batch = tokenizer(sampler.sample(corpus, BATCH), padding=True, truncation=True, max_length=MAX_TOKENS,
                          return_tensors="pt")
        begin = time.perf_counter()
        student.train()
        with torch.no_grad():
            target = teacher(batch["input_ids"], batch["attention_mask"]).last_hidden_state
        hidden = last_hidden(student(batch["input_ids"], batch["attention_mask"]))
        mask = batch["attention_mask"]
        loss = feature_distillation_loss(hidden[mask.bool()], target[mask.bool()]) + \
            feature_distillation_loss(mean_pooled(hidden, mask), mean_pooled(target, mask))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def _float_step(teacher, tokenizer, corpus: list[str], steps: int = 12) -> float:
    """The median seconds of a plain float training step on the same kind of batch (the baseline of the QAT
    step time)."""
    model = copy.deepcopy(teacher).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR["auto"])
    sampler, times = random.Random(1), []
    for _ in range(steps):
        batch = tokenizer(sampler.sample(corpus, BATCH), padding=True, truncation=True, max_length=MAX_TOKENS,
                          return_tensors="pt")
        begin = time.perf_counter()
        loss = model(batch["input_ids"], batch["attention_mask"]).last_hidden_state.square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - begin)
    return statistics.median(times[2:])


def _held_out_cosine(model, tokenizer, reference: torch.Tensor) -> float:
    return float((reference * embeddings(model, tokenizer, True, HELD_OUT_SENTENCES)).sum(1).mean())
