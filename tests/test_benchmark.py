"""``fxq.benchmark`` and ``fxq bench TARGET``: the user's model against its quantized form, and bad command lines
that end in one error line. (What is asserted is what the run measured and printed, never a speed.)"""

import contextlib
import io

import pytest
import torch

import fxq
from fxq.cli import main
from tests.models import MLP

MLP_TARGET = ["tests.models:MLP", "--input-shape", "4,64"]


def test_benchmark_measures_both_models_on_the_same_inputs_and_restores_threads():
    torch.manual_seed(0)
    model = MLP().eval()
    x = torch.randn(4, 64)
    quantized = fxq.quantize(model, (x,), [(torch.randn(4, 64),) for _ in range(4)])
    threads = torch.get_num_threads()
    result = fxq.benchmark(model, quantized, (x,), metric=lambda m: float(m(x).abs().mean()), threads=1, rounds=3)
    assert torch.get_num_threads() == threads
    assert result.float_ms > 0 and result.quantized_ms > 0 and result.rounds == 3 and result.threads == 1
    assert result.quantized_bytes < result.float_bytes
    with torch.no_grad():
        assert result.sqnr_db == pytest.approx(fxq.metrics.sqnr_db(model(x), quantized(x)))
    assert result.float_metric == pytest.approx(float(model(x).abs().mean()))
    text = str(result)
    assert "flags: avx2=" in text and "output SQNR dB" in text and "metric" in text


def test_benchmark_refuses_outputs_with_nothing_to_compare():
    ids = torch.nn.Module()
    ids.forward = lambda x: x.argmax(-1)
    with pytest.raises(fxq.ConfigError, match="no float tensor"):
        fxq.benchmark(ids, ids, (torch.randn(2, 3),), rounds=1)


def _cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_fxq_bench_target_quantizes_with_defaults_and_prints_the_comparison():
    code, out, _ = _cli("bench", *MLP_TARGET, "--calibration", "4", "--rounds", "3", "--threads", "1")
    assert code == 0
    assert "ops quantized" in out and "latency ms" in out and "output SQNR dB" in out


@pytest.mark.parametrize("argv, message", [
    (["bench", "tests.models:MLP"], "needs example inputs"),
    (["bench", "tests.models:NoSuchModel", "--input-shape", "4,64"], "cannot load"),
    (["bench", "--models", "mymodels:build"], "the built-in models are"),
])
def test_bad_bench_command_lines_end_in_one_error_line(argv, message):
    code, _, err = _cli(*argv)
    assert code == 2 and message in err and "Traceback" not in err


def test_the_int8_floor_counts_each_conv_and_linear_multiply_accumulate():
    from fxq.tools.gemm_ceiling import multiply_accumulates

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, groups=4),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 10))
    # 8 x 6 x 6 outputs of 3 x 3 x 3 products; 8 x 4 x 4 outputs of 2 x 3 x 3; 10 outputs of 128
    expected = 8 * 36 * 27 + 8 * 16 * 18 + 10 * 128
    assert multiply_accumulates(model, (torch.randn(1, 3, 6, 6),)) == expected
    assert multiply_accumulates(model, (torch.randn(2, 3, 6, 6),)) == 2 * expected
    assert not model._forward_hooks and not any(m._forward_hooks for m in model)


@pytest.mark.parametrize("quantized_ms, words", [(0.5, "2.00x faster"), (2.0, "2.00x slower")])
def test_the_latency_row_says_faster_or_slower_as_measured(quantized_ms, words):
    result = fxq.BenchmarkResult(1.0, quantized_ms, 100, 30, 40.0, None, None, 1, 3, "cpu: test")
    assert words in str(result) and ("slower" in str(result)) == (quantized_ms > 1)
