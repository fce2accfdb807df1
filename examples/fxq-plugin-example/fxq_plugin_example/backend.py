"""The ``x86-per-tensor`` backend: x86's int8 kernels for hardware or formats that take one scale per weight
tensor (whatever the qconfig asks, weights are quantized per tensor, and the dump says why), plus a fusion rule
x86 lacks: ``clamp(conv(x), min=0)``, a ReLU spelled as a clamp, fuses with the conv into one kernel."""

from __future__ import annotations

from dataclasses import replace

import torch
from fxq.passes.fuse import op_relu
from torch import nn
from torch.fx import Node

import fxq
from fxq.backends.x86 import X86

PER_TENSOR = "x86-per-tensor keeps one scale per weight tensor"


def clamp_as_relu(rw: fxq.Rewriter, op: Node, clamp: Node) -> Node | fxq.Declined:
    """Fuse the conv with a clamp that only cuts below zero, exactly what a ReLU computes."""
    low = clamp.kwargs.get("min", clamp.args[1] if len(clamp.args) > 1 else None)
    high = clamp.kwargs.get("max", clamp.args[2] if len(clamp.args) > 2 else None)
    if clamp.target is not torch.clamp or low != 0 or high is not None:
        return fxq.Declined(f"{clamp.name} is not clamp(x, min=0) with no upper bound: not a ReLU")
    return op_relu(rw, op, clamp)


FUSION_RULES = tuple(fxq.Rule(fxq.Pattern.chain(conv, "hardtanh", names=("op", "clamp")), clamp_as_relu,
                              "conv -> clamp(min=0): the conv's fused ReLU")
                     for conv in (nn.Conv1d, nn.Conv2d, nn.Conv3d))

X86_PER_TENSOR = fxq.Backend(
    "x86-per-tensor",
    {concept: replace(entry, per_tensor_weight=PER_TENSOR) if entry.weighted else entry
     for concept, entry in X86.ops.items()},
    lowering_rules=X86.lowering_rules, engine=X86.engine, fusion_rules=FUSION_RULES)
