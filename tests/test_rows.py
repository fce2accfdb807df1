import torch
from torch import nn

import fxq


def test_rows_show_fusion_rules_status_and_qparams():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Linear(4, 2)).eval()
    mapping = fxq.get_default_qconfig_mapping("reference").set_module_name("3", None)
    prepared = fxq.prepare(model, mapping, (torch.randn(1, 4),), backend="reference")
    prepared(torch.randn(8, 4))
    rows = {row.name: row for row in fxq.inspect(prepared)}
    assert list(rows) == ["_0", "_2", "_3"]  # observers are hidden
    assert rows["_0"].fused_group == "_0+_1" and rows["_0"].concept == "linear_relu"
    assert rows["_0"].rule == "global" and rows["_0"].status == "observed (input0, output)"
    assert rows["_0"].observed_min is not None and rows["_0"].scale > 0  # what convert will choose
    assert rows["_2"].status == "observed (input0); float output"  # only a float op reads it
    assert rows["_3"].rule == "module_name('3')" and rows["_3"].status.startswith("float: qconfig is None")
    converted = fxq.convert(prepared)
    rows = {row.name: row for row in fxq.inspect(converted)}
    assert rows["_0"].status == "reference:linear_relu" and rows["_0"].scale > 0
    assert rows["_2"].status == "reference:linear (float output)"
    assert rows["_0"].zero_point == 0 and rows["_0"].observed_min >= 0  # a ReLU output starts at 0
    assert rows["_0"].weight.startswith("qint8 per-channel (4 ch")
    with_boundaries = fxq.inspect(converted, include_boundaries=True)
    assert [r.status for r in with_boundaries].count("quantize") == 2
