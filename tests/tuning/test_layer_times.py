"""Per-layer int8 vs float time in context: a tiny layer between float ops is slower in int8 (its conversions
dominate) and a large one faster; each form is charged the conversions it needs next to its neighbours."""

import torch

from fxq.annotation import info
from fxq.tuning.layer_times import _with_conversions, kernel_nodes, measure_layer_times, tunable_layers
from tests.tuning.models import TinyHead, batches, prepared_and_converted


def _timed(example):
    model = TinyHead().eval()
    prepared, converted = prepared_and_converted(model, example, batches(512, 2))
    return converted, measure_layer_times(prepared, converted, example)


def test_a_tiny_layer_is_slower_in_int8_and_a_large_one_is_not():
    _, times = _timed((torch.randn(1, 512),))
    assert times["tiny"].int8_is_slower, times["tiny"]
    _, times = _timed((torch.randn(256, 512),))
    assert not times["big"].int8_is_slower, times["big"]
    assert times["big"].int8_ms < times["big"].float_ms


def test_int8_form_owns_the_quantize_feeding_it_and_the_dequantize_after_it():
    converted, times = _timed((torch.randn(1, 512),))
    assert set(times) == {"big", "tiny"}
    kernels = kernel_nodes(tunable_layers(converted)["tiny"])
    owned = {info(node).lowered_to for node in _with_conversions(kernels)}
    assert owned == {info(kernels[0]).lowered_to, "quantize", "dequantize"}
    assert "ms vs float" in times["tiny"].describe()
