"""``fxq dump`` at every stage of every test model: the rows agree with the graph they describe."""

import pytest
import torch
from fxq.tools.dump import STAGES
from torch import nn

import fxq
from fxq.annotation import info
from tests.dump.helpers import FACTORIES, dump, dump_args, dump_text
from tests.models import calibration_batches, example_inputs, make_model

OPS = ("call_module", "call_function", "call_method")


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_rows_agree_with_the_graph_at_every_stage(name, stage):
    result = dump(name, "--stage", stage, "--calibration", "2")
    graph = result.graph.graph
    assert [row.name for row in result.rows] == [node.name for node in graph.nodes]
    for row, node in zip(result.rows, graph.nodes, strict=True):
        assert row.inputs == tuple(arg.name for arg in node.all_input_nodes)
        assert (row.category == "io") == (node.op not in OPS), row
        if node.op in OPS and stage != "traced":
            assert row.concept == info(node).concept
    text = dump_text(name, "--stage", stage)
    assert max(len(line) for line in text.splitlines()) <= 120, "the text view must fit 120 columns"


def test_prepared_rows_have_no_observed_range_and_calibrated_rows_do():
    prepared = {row.name: row for row in dump("mlp", "--stage", "prepared").rows}
    calibrated = {row.name: row for row in dump("mlp", "--stage", "calibrated").rows}
    assert prepared["fc1"].observed_min is None and prepared["fc1"].status == "observed (input0, output)"
    assert calibrated["fc1"].observed_min == 0.0 and calibrated["fc1"].observed_max > 0  # after a ReLU
    assert calibrated["fc1"].scale > 0 and calibrated["fc1"].output_dtype == "float32"


def test_fused_conv_bn_relu_is_one_group():
    rows = {row.name: row for row in dump("resnet", "--stage", "fused").rows}
    assert rows["conv1"].fused_group == "conv1+bn1+relu" and rows["conv1"].concept == "conv2d_relu"
    assert "bn1" not in rows and "relu" not in rows  # folded into conv1
    converted = {row.name: row for row in dump("resnet").rows}
    assert converted["conv1"].status == "QuantizedConv+relu"
    assert converted["conv1"].input_dtypes == ("quint8",) and converted["conv1"].output_dtype == "quint8"
    assert converted["conv1"].weight.startswith("qint8 per-channel (16 ch")


def _saved(tmp_path, mapping):
    model = make_model("resnet")
    quantized = fxq.quantize(model, example_inputs("resnet"), calibration_batches("resnet"), backend="x86",
                             qconfig_mapping=mapping)
    path = tmp_path / "resnet_int8.pt"
    fxq.save(quantized, path)
    return path


def test_excluded_module_shows_float_with_reason_and_rule(tmp_path):
    mapping = fxq.get_default_qconfig_mapping("x86").set_module_name("fc", None)
    path = _saved(tmp_path, mapping)
    from fxq.tools.dump import build_dump

    rows = {row.name: row for row in build_dump(dump_args(str(path), "--input-shape", "2,3,16,16")).rows}
    assert rows["fc"].category == "float"
    assert rows["fc"].rule == "module_name('fc')"
    assert rows["fc"].status == "float: qconfig is None (rule module_name('fc'))"
    assert rows["fc"].output_dtype == "float32" and rows["conv1"].output_dtype == "quint8"


def test_regex_rule_is_named_as_the_chooser(tmp_path):
    qconfig = fxq.get_default_qconfig("x86")
    mapping = fxq.get_default_qconfig_mapping("x86").set_module_name_regex(r"layer2\..*conv.*", qconfig)
    path = _saved(tmp_path, mapping)
    from fxq.tools.dump import build_dump

    rows = {row.name: row for row in build_dump(dump_args(str(path))).rows}
    assert rows["layer2_conv1"].rule == r"module_name_regex('layer2\\..*conv.*')"
    assert rows["layer1_conv1"].rule == "global"


def test_untraceable_submodule_is_a_float_leaf_with_its_reason():
    rows = {row.name: row for row in dump("untraceable").rows}
    gate = rows["gate"]
    assert gate.category == "float" and "could not be traced" in gate.status and "models.py" in gate.status


def test_saved_model_dump_rejects_compare(tmp_path):
    path = _saved(tmp_path, fxq.get_default_qconfig_mapping("x86"))
    from fxq.tools.dump import build_dump

    with pytest.raises(fxq.ConfigError, match="needs the float model"):
        build_dump(dump_args(str(path), "--compare"))


def test_bad_targets_and_inputs_are_clear_errors():
    from fxq.tools.dump import build_dump

    with pytest.raises(fxq.ConfigError, match="neither a file nor package.module:callable"):
        build_dump(dump_args("no_such_model"))
    with pytest.raises(fxq.ConfigError, match="has no attribute 'Missing'"):
        build_dump(dump_args("tests.models:Missing", "--input-shape", "1,4"))
    with pytest.raises(fxq.ConfigError, match="--input-shape"):
        build_dump(dump_args("tests.models:MLP"))
    with pytest.raises(fxq.ConfigError, match="sizes separated by commas"):
        build_dump(dump_args("tests.models:MLP", "--input-shape", "4x64"))
    with pytest.raises(fxq.ConfigError, match="not an nn.Module"):
        build_dump(dump_args("tests.dump.helpers:SHAPES", "--input-shape", "4,64"))


def test_cli_prints_errors_without_a_traceback(capsys):
    from fxq.cli import main

    assert main(["dump", "tests.models:MLP"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fxq dump: error:") and "Traceback" not in err


def test_model_is_not_changed_by_dumping():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    from fxq.tools import dump as tool

    original = tool.load_target
    tool.load_target = lambda target: model
    try:
        tool.build_dump(dump_args("x:y", "--input-shape", "2,4", "--compare"))
    finally:
        tool.load_target = original
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training
