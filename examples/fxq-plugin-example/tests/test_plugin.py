"""The plugin as a user installs it: fxq finds its pass and backend through entry points, with nothing
registered by hand. Run from outside fxq's repository after ``pip install`` of this directory."""

import json
import subprocess
import sys

import pytest
import torch
from fxq_plugin_example.models import scaled_conv_net
from torch import nn

import fxq
from fxq.metrics import sqnr_db

FOLD_FIRST = {"before fuse": "fold-channel-scale"}


def _batches(count, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, 16, 16, generator=generator),) for _ in range(count)]


def test_fxq_lists_the_plugin_pass_and_backend():
    assert "fold-channel-scale" in fxq.available_passes()
    assert "x86-per-tensor" in fxq.available_backends()


def test_the_pass_runs_inside_quantize_and_no_custom_op_is_left():
    model, (x,) = scaled_conv_net(), _batches(1, seed=7)[0]
    quantized = fxq.quantize(model, (x,), _batches(4), backend="x86-per-tensor", passes=FOLD_FIRST, runtime="graph")
    assert "fold-channel-scale" in [record.name for record in fxq.pass_records(quantized)]
    targets = [str(node.target) for node in quantized.graph.nodes]
    assert not any("channel_scale" in target for target in targets)
    assert sqnr_db(model(x), quantized(x)) > 35  # measured 44.7


def test_without_the_pass_the_custom_op_runs_in_float_between_dequantize_and_quantize():
    model, (x,) = scaled_conv_net(), _batches(1, seed=7)[0]
    quantized = fxq.quantize(model, (x,), _batches(4), backend="x86", runtime="graph")
    assert sum("channel_scale" in str(node.target) for node in quantized.graph.nodes) == 2


def test_the_fold_keeps_the_numbers():
    model, (x,) = scaled_conv_net(), _batches(1, seed=7)[0]
    prepared = fxq.prepare(model, fxq.QConfigMapping(), (x,), passes=FOLD_FIRST)  # nothing quantized: folding alone
    assert torch.allclose(prepared(x), model(x), atol=1e-5)
    assert not any("channel_scale" in str(node.target) for node in prepared.graph.nodes)


class ComputedScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.gamma = nn.Conv2d(3, 4, 1), nn.Parameter(torch.ones(4))

    def forward(self, x):
        return torch.ops.fxq_example.channel_scale(self.conv(x), self.gamma * 2)


def test_a_computed_scale_is_a_near_miss_with_its_reason():
    model, x = ComputedScale().eval(), torch.randn(2, 3, 4, 4)
    prepared = fxq.prepare(model, fxq.QConfigMapping(), (x,), passes=FOLD_FIRST)
    rows = {row.name: row for row in fxq.inspect(prepared)}
    scale = next(row for row in rows.values() if row.concept == "channel_scale")
    assert any("computed, not a parameter" in miss for miss in scale.near_misses)
    assert torch.allclose(prepared(x), model(x))


def test_the_backend_quantizes_every_weight_per_tensor_with_int8_kernels():
    model, (x,) = scaled_conv_net(), _batches(1, seed=7)[0]
    quantized = fxq.quantize(model, (x,), _batches(4), backend="x86-per-tensor", passes=FOLD_FIRST, runtime="graph")
    kernels = {name: module for name, module in quantized.named_modules() if hasattr(module, "qweight")}
    assert set(kernels) == {"conv1", "conv2", "fc"}
    assert all(module.qweight.qscheme() == torch.per_tensor_affine for module in kernels.values())
    rows = {row.name: row for row in fxq.inspect(quantized)}
    assert "x86-per-tensor keeps one scale per weight tensor" in rows["conv1"].weight
    assert rows["conv1"].status == "QuantizedConv+relu"  # the clamp(min=0) fused as the conv's ReLU


def test_dump_names_the_plugin_rules_with_their_file_and_line():
    command = [sys.executable, "-m", "fxq", "dump", "fxq_plugin_example.models:scaled_conv_net",
               "--input-shape", "2,3,16,16", "--backend", "x86-per-tensor", "--passes",
               "before fuse: fold-channel-scale", "--format", "json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    conv1 = next(node for node in json.loads(done.stdout)["nodes"] if node["name"] == "conv1")
    made_by = " | ".join(conv1["made_by"])
    assert "fold-channel-scale:fold (fold_channel_scale.py:" in made_by
    assert "fuse:clamp_as_relu (backend.py:" in made_by


def test_dump_after_the_plugin_pass_shows_its_graph():
    command = [sys.executable, "-m", "fxq", "dump", "fxq_plugin_example.models:scaled_conv_net",
               "--input-shape", "2,3,16,16", "--passes", "before fuse: fold-channel-scale",
               "--after", "fold-channel-scale"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "after pass 'fold-channel-scale'" in done.stdout and "- channel_scale" in done.stdout


@pytest.mark.parametrize("spec", ["after nowhere: fold-channel-scale", "before fuse: fold-channel-scales"])
def test_a_wrong_pipeline_is_an_error_before_anything_runs(spec):
    with pytest.raises(fxq.ConfigError):
        fxq.prepare(scaled_conv_net(), fxq.get_default_qconfig_mapping(), _batches(1)[0], passes=spec)
