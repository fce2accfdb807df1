"""``fxq dump`` (and ``fxq bench``/``fxq tune``, which share its inputs) with inputs that do not fit: one
``fxq dump: error:`` line that says what to change, never a traceback or torch's tooling hints."""

import contextlib
import io

import pytest
import torch
from fxq.tools.dump import calibration_batches

from fxq.cli import main

MLP = ["dump", "tests.models:MLP"]


def _cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _saved(tmp_path, name, value):
    path = tmp_path / name
    torch.save(value, path)
    return str(path)


@pytest.mark.parametrize("extra, message", [
    (["--input-shape", "4,63"], "failed at node 'fc1': RuntimeError: mat1 and mat2 shapes cannot be multiplied"),
    (["--input-shape", "4,64", "--calibration", "0"], "--calibration 0: give at least 1 batch"),
    (["--input-shape", "4,64", "--calibration", "-2"], "give at least 1 batch"),
])
def test_inputs_that_do_not_fit_are_one_error_line(extra, message):
    code, _, err = _cli(*MLP, *extra)
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and "tlparse" not in err and "Traceback" not in err


def test_calibration_batches_of_the_wrong_shape_name_the_batch(tmp_path):
    path = _saved(tmp_path, "cal.pt", [torch.randn(4, 64), torch.randn(2, 4, 63)])
    code, _, err = _cli(*MLP, "--input-shape", "4,64", "--calibration", path)
    assert code == 2 and "calibration batch 1 (2x4x63)" in err and "batches must fit the model" in err


def test_example_inputs_saved_as_a_list_are_the_inputs(tmp_path):
    path = _saved(tmp_path, "example.pt", [torch.randn(4, 64)])
    code, out, _ = _cli(*MLP, "--example-inputs", path)
    assert code == 0 and "MLP: stage converted" in out
    code, _, err = _cli(*MLP, "--example-inputs", _saved(tmp_path, "bad.pt", {"x": 1}))
    assert code == 2 and "expected a tensor or a tuple/list of tensors" in err


def test_a_calibration_file_with_one_tensor_is_one_batch(tmp_path):
    data = torch.randn(3, 4, 64)
    batches = calibration_batches(_saved(tmp_path, "one.pt", data), (torch.randn(4, 64),))
    assert len(batches) == 1 and torch.equal(batches[0][0], data)  # not 3 batches of its rows
