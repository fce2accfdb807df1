"""fxq's own int4 and int8 weight-only matmuls (``fxq.nn.quantized.weight_only_kernels``): the kernels compute
what their float reference says on awkward shapes, weight-only Linears run on them where they build, and a machine
where they cannot build falls back (int4 to torch's kernel) with a warning rather than failing."""

import copy
import pickle
import warnings

import pytest
import torch
from torch import nn

from fxq.metrics import sqnr_db
from fxq.nn.quantized import weight_only_kernels
from fxq.nn.quantized.weight_only_linear import WeightOnlyLinear

needs_kernel = pytest.mark.skipif(not weight_only_kernels.available(), reason="fxq's kernels need x86 AVX2/FMA and a "
                                  "C compiler")


@needs_kernel
@pytest.mark.parametrize("bits, rows, out_features, in_features, group", [
    (4, 1, 96, 256, 64), (4, 5, 23, 200, 64), (4, 3, 17, 384, 128), (4, 2, 8, 512, 256), (4, 7, 33, 100, 128),
    (4, 4, 21, 250, 32), (4, 1, 16, 128, 32), (8, 1, 96, 256, 128), (8, 5, 23, 200, 32), (8, 3, 9, 300, 96)])
def test_the_kernels_compute_their_reference_product(bits, rows, out_features, in_features, group):
    generator = torch.Generator().manual_seed(rows * out_features)
    padded = -(-in_features // group) * group
    x = torch.randn(rows, in_features, generator=generator) * torch.rand(in_features, generator=generator) * 4
    qweight, scale = weight_only_kernels.random_weight(bits, out_features, padded, group, generator)
    bias = torch.randn(out_features, generator=generator)
    op = torch.ops.fxq.int4_linear if bits == 4 else torch.ops.fxq.int8_linear
    for b in (bias, None):
        got = op(x, qweight, scale, group, b)
        expected = weight_only_kernels.reference(bits, x, qweight, scale, group, b)
        assert (got.double() - expected).abs().max() <= 1e-5 * expected.abs().max()


@needs_kernel
def test_a_zero_row_computes_zeros_and_no_rows_compute_an_empty_result():
    qweight = torch.randint(0, 256, (16, 64), dtype=torch.uint8)
    scale = torch.rand(16, 2)
    assert torch.equal(torch.ops.fxq.int4_linear(torch.zeros(1, 128), qweight, scale, 64, None), torch.zeros(1, 16))
    assert torch.ops.fxq.int4_linear(torch.zeros(0, 128), qweight, scale, 64, None).shape == (0, 16)


@needs_kernel
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("rows", [1, 12, 200])  # 200 rows of a small weight: expanded and a float matmul
def test_weight_only_linears_run_the_kernels_close_to_the_float_product_of_their_weight(bits, rows):
    torch.manual_seed(0)
    layer = nn.Linear(320, 70)  # neither width fits torch's int4 kernel
    quantized = WeightOnlyLinear(layer, bits, 64)
    assert quantized.compute.startswith(f"fxq int{bits} kernel")
    x = torch.randn(2, rows, 320)
    expected = nn.functional.linear(x, quantized.dequantized_weight(), layer.bias)
    assert sqnr_db(expected, quantized(x)) > 38  # 8-bit activations per group of 64: measured 44 dB
    assert quantized(x.to(torch.bfloat16)).dtype == torch.bfloat16


@needs_kernel
def test_kernel_layers_copy_pickle_load_state_dict_and_trace():
    torch.manual_seed(0)
    layer = nn.Linear(256, 96)
    quantized = WeightOnlyLinear(layer, 4, 128)
    x = torch.randn(3, 256)
    for copy_of in (copy.deepcopy(quantized), pickle.loads(pickle.dumps(quantized))):
        assert copy_of.uses_kernel and torch.equal(copy_of(x), quantized(x))
    other = WeightOnlyLinear(nn.Linear(256, 96), 4, 128)
    other.load_state_dict(quantized.state_dict())
    assert torch.equal(other(x), quantized(x))
    traced = torch.jit.trace(quantized, x)  # the kernel is an operator: a trace calls it, not a constant result
    assert "fxq::int4_linear" in str(traced.inlined_graph)
    assert torch.equal(traced(2 * x), quantized(2 * x))


@needs_kernel
@needs_kernel
def test_groups_of_32_take_the_kernel_where_the_width_pads_to_whole_chunks():
    assert WeightOnlyLinear(nn.Linear(250, 8), 4, 32).compute.startswith("fxq int4 kernel")  # 256 = 4 chunks
    assert not WeightOnlyLinear(nn.Linear(96, 8), 4, 32).compute.startswith("fxq int4 kernel")  # 96: 1.5 chunks
    assert WeightOnlyLinear(nn.Linear(96, 8), 8, 32).compute.startswith("fxq int8 kernel")  # int8: chunks of 32
    assert not WeightOnlyLinear(nn.Linear(96, 8), 8, 48).uses_kernel


@needs_kernel
def test_the_dequantized_weight_is_the_modules_own():
    torch.manual_seed(0)
    quantized = WeightOnlyLinear(nn.Linear(200, 24), 4, 64)
    assert torch.equal(weight_only_kernels.dequantize(4, quantized.qweight, quantized.scale, 64, 200),
                       quantized.dequantized_weight())


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
    """A build into an empty cache directory, forgotten again afterwards."""
    monkeypatch.setenv("FXQ_CACHE_DIR", str(tmp_path))
    weight_only_kernels._library.cache_clear()
    yield tmp_path
    weight_only_kernels._library.cache_clear()


@needs_kernel
def test_the_build_is_cached_by_source_and_reused(fresh_build):
    assert weight_only_kernels.available()
    built = list(fresh_build.glob("weight_only_kernels-*.so"))
    assert len(built) == 1 and not list(fresh_build.glob("tmp*"))
    stamp = built[0].stat().st_mtime_ns
    weight_only_kernels._library.cache_clear()
    assert weight_only_kernels.available() and built[0].stat().st_mtime_ns == stamp


@needs_kernel
def test_a_compiler_that_fails_warns_and_int4_falls_back_to_torch_kernel(fresh_build, monkeypatch):
    monkeypatch.setenv("CC", "false")
    with pytest.warns(UserWarning, match="could not build its weight-only matmuls"):
        assert not weight_only_kernels.available()
    quantized = WeightOnlyLinear(nn.Linear(256, 96), 4, 64)
    assert quantized.compute.startswith("torch int4 kernel")


def test_the_kernel_can_be_turned_off(fresh_build, monkeypatch):
    monkeypatch.setenv("FXQ_NATIVE_KERNELS", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not weight_only_kernels.available()
    assert not WeightOnlyLinear(nn.Linear(300, 70), 4, 64).uses_kernel  # and torch's does not fit
    assert not WeightOnlyLinear(nn.Linear(256, 64), 8, 64).uses_kernel  # int8 expands its weight


@needs_kernel
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("rows", [3, 100])  # the kernel, and a weight expanded for many rows
def test_gradients_flow_to_the_inputs_through_the_quantized_weight(bits, rows):
    torch.manual_seed(0)
    quantized = WeightOnlyLinear(nn.Linear(300, 64), bits, 64)
    x = torch.randn(rows, 300, requires_grad=True)
    grad = torch.randn(rows, 64)
    quantized(x).backward(grad)
    expected = grad @ quantized.dequantized_weight()  # activation rounding passes gradients straight through
    assert torch.allclose(x.grad, expected, atol=1e-5)
