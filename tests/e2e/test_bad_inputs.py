"""Bad inputs, each one clear FxqError with the original chained: a converted model called with the wrong
inputs, convert given the wrong model, observers with impossible settings, damaged files given to fxq.load.

The cases are data (``CASES``): the tests assert each one, and ``docs/errors.md`` is generated from the same
cases with the messages they actually get. Regenerate it with ``python -m tests.e2e.test_bad_inputs --write-docs``.
"""

from __future__ import annotations

import copy
import functools
import re
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

import fxq
from fxq.errors import ConfigError, FxqError, InputError, LoadError
from fxq.observers import MinMaxObserver, MovingAverageMinMaxObserver, PerChannelMinMaxObserver

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"


class _Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return torch.relu(self.fc(x))


class _Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, image):
        return torch.relu(self.conv(image))


def _inputs(*shape):
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(0)),)


@functools.cache
def _converted(model_type: type, backend: str, *shape: int):
    """A converted model, built once (the cases only call it)."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fxq.quantize(model_type().eval(), _inputs(*shape), [_inputs(*shape)] * 4, backend=backend)


def _mlp(backend="x86"):
    return _converted(_Mlp, backend, 2, 8)


def _conv():
    return _converted(_Conv, "x86", 1, 3, 8, 8)


def _per_channel_activation_on(model_inputs):
    qconfig = fxq.QConfig(activation=PerChannelMinMaxObserver.with_args(ch_axis=3, dtype=torch.quint8,
                                                                         symmetric=False),
                          weight=fxq.get_default_qconfig("x86").weight)
    prepared = fxq.prepare(_Mlp().eval(), fxq.QConfigMapping().set_global(qconfig), model_inputs, backend="x86")
    prepared(*model_inputs)


def _saved(tmp: Path) -> Path:
    path = tmp / "model.fxq.pt"
    fxq.save(_mlp(), path)
    return path


def _truncated(tmp: Path) -> None:
    data = _saved(tmp).read_bytes()  # an interrupted copy: its end, which holds the zip's directory, is missing
    (tmp / "cut.pt").write_bytes(data[:-100])
    fxq.load(tmp / "cut.pt")


def _random_bytes(tmp: Path) -> None:
    (tmp / "noise.pt").write_bytes(bytes(range(256)) * 4)
    fxq.load(tmp / "noise.pt")


def _empty(tmp: Path) -> None:
    (tmp / "empty.pt").write_bytes(b"")
    fxq.load(tmp / "empty.pt")


def _payload_missing(tmp: Path) -> None:
    """The zip archive is intact but its pickle (data.pkl) is gone."""
    with zipfile.ZipFile(_saved(tmp)) as source, zipfile.ZipFile(tmp / "hollow.pt", "w") as target:
        for item in source.infolist():
            if not item.filename.endswith("data.pkl"):
                target.writestr(item, source.read(item.filename))
    fxq.load(tmp / "hollow.pt")


def _plain_torch_save(tmp: Path) -> None:
    torch.save(_mlp(), tmp / "plain.pt")
    fxq.load(tmp / "plain.pt")


def _fields_missing(tmp: Path) -> None:
    torch.save({"format": "fxq-model", "version": 2}, tmp / "partial.pt")
    fxq.load(tmp / "partial.pt")


class _RunsCode:
    """What a tampered pickle holds: an object whose unpickling calls a function (here one that leaves a file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "the file ran code"))


def _pickle_that_runs_code(tmp: Path) -> None:
    torch.save({"format": "fxq-model", "version": 2, "model": _RunsCode(tmp / "ran.txt"), "meta": {}},
               tmp / "tampered.pt")
    try:
        fxq.load(tmp / "tampered.pt")
    finally:
        assert not (tmp / "ran.txt").exists()


def _graph_calling(tmp: Path, target: str) -> None:
    """A well-formed fxq file whose graph was edited to call ``target`` (module:qualname) on its input."""
    payload = torch.load(_saved(tmp), weights_only=True)
    node = next(n for n in payload["model"]["graph"]["nodes"] if n["op"] == "call_module")
    node["op"], node["target"] = "call_function", {"__fxq__": "ref", "name": target}
    torch.save(payload, tmp / "edited.pt")
    fxq.load(tmp / "edited.pt")


@dataclass(frozen=True)
class Case:
    """One bad input: what triggers it (given a scratch directory), the error and what its message must say."""

    group: str
    name: str
    trigger: Callable[[Path], object]
    error: type[FxqError]
    fragments: tuple[str, ...]
    chained: bool = False  # the original exception is the error's __cause__


CASES = (
    Case("calling a converted model", "features: (2, 7) into Linear(8, 4), x86", lambda _: _mlp()(torch.randn(2, 7)),
         InputError, ("input 'x' has shape (2, 7)", "example inputs had (2, 8)", "node 'fc' (module 'fc', "
                      "QuantizedLinearFloatOutput)", "expects 8 features in the last dimension", "packB"), chained=True),
    Case("calling a converted model", "features, reference backend",
         lambda _: _mlp("reference")(torch.randn(2, 7)), InputError,
         ("input 'x' has shape (2, 7)", "WeightQuantized", "expects 8 features", "mat1 and mat2"), chained=True),
    Case("calling a converted model", "float64 input", lambda _: _mlp()(torch.randn(2, 8, dtype=torch.float64)),
         InputError, ("input 'x' is float64", "float32 tensor of shape (2, 8)", ".to(torch.float32)",
                      "node 'fc'", "expected scalar type Float"), chained=True),
    Case("calling a converted model", "int64 input", lambda _: _mlp()(torch.ones(2, 8, dtype=torch.int64)),
         InputError, ("input 'x' is int64", ".to(torch.float32)"), chained=True),
    Case("calling a converted model", "rank 1 into Linear, x86", lambda _: _mlp()(torch.randn(8)), InputError,
         ("input 'x' has 1 dimension(s) (shape (8,))", "example inputs had 2 (shape (2, 8))", "node 'fc'"),
         chained=True),
    Case("calling a converted model", "channels: 4 into Conv2d(3, 4, 3)", lambda _: _conv()(torch.randn(1, 4, 8, 8)),
         InputError, ("input 'image' has shape (1, 4, 8, 8)", "node 'conv'", "QuantizedConv",
                      "expects 3 channels in dimension 1"), chained=True),
    Case("calling a converted model", "rank 3 into Conv2d", lambda _: _conv()(torch.randn(3, 8, 8)), InputError,
         ("input 'image' has 3 dimension(s)", "example inputs had 4", "expects 3 channels"), chained=True),
    Case("calling a converted model", "two arguments to forward(x)", lambda _: _mlp()(torch.randn(2, 8),
                                                                                       torch.randn(2, 8)),
         InputError, ("takes forward(x)", "2 positional", "too many positional arguments"), chained=True),
    Case("calling a converted model", "no argument", lambda _: _mlp()(), InputError,
         ("takes forward(x)", "missing a required argument: 'x'"), chained=True),
    Case("calling a converted model", "a 'meta' tensor", lambda _: _mlp()(torch.randn(2, 8, device="meta")),
         InputError, ("input 'x' is on device meta", "are on cpu", ".to('cpu')"), chained=True),
    Case("calling a converted model", "a list instead of a tensor", lambda _: _mlp()([1.0] * 8), InputError,
         ("input 'x' is a list", "float32 tensor of shape (2, 8)"), chained=True),
    Case("prepare", "a bfloat16 model", lambda _: fxq.quantize(_Mlp().to(torch.bfloat16), (torch.randn(2, 8),),
                                                                [(torch.randn(2, 8),)]), ConfigError,
         ("takes float32 models", "parameter 'fc.weight' is torch.bfloat16", "model.float()",
          "fxq.quantize_dynamic(model)")),
    Case("convert", "an already converted model", lambda _: fxq.convert(_mlp()), ConfigError,
         ("already converted", "use it as it is")),
    Case("convert", "a plain nn.Module", lambda _: fxq.convert(_Mlp()), ConfigError,
         ("got a _Mlp, a plain nn.Module", "fxq.prepare(model, qconfig_mapping, example_inputs)")),
    Case("convert", "a torch.fx GraphModule not from fxq.prepare",
         lambda _: fxq.convert(torch.fx.symbolic_trace(_Mlp())), ConfigError,
         ("GraphModule that fxq.prepare() did not produce", "fxq.save or copy.deepcopy")),
    Case("observer settings", "quant_min >= quant_max",
         lambda _: MinMaxObserver.with_args(quant_min=5, quant_max=5), ConfigError,
         ("MinMaxObserver.with_args(quant_max=5, quant_min=5)", "quant_min=5 must be below quant_max=5")),
    Case("observer settings", "quint8 with quant_max=300",
         lambda _: MinMaxObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=300), ConfigError,
         ("do not fit torch.quint8", "[0, 255]")),
    Case("observer settings", "symmetric qint8 on [0, 127]",
         lambda _: MinMaxObserver.with_args(dtype=torch.qint8, symmetric=True, quant_min=0, quant_max=127),
         ConfigError, ("balanced around 0", "[-127, 127]", "symmetric=False")),
    Case("observer settings", "symmetric quint8 with reduce_range",
         lambda _: MinMaxObserver.with_args(symmetric=True, reduce_range=True), ConfigError,
         ("reduce_range is not supported with symmetric quint8",)),
    Case("observer settings", "eps=0", lambda _: MinMaxObserver.with_args(eps=0.0), ConfigError,
         ("must be a positive number", "eps=0.0")),
    Case("observer settings", "averaging_constant=2",
         lambda _: MovingAverageMinMaxObserver.with_args(averaging_constant=2), ConfigError, ("(0, 1]",)),
    Case("observer settings", "torch.ao's qscheme=torch.per_channel_symmetric",
         lambda _: MinMaxObserver.with_args(qscheme=torch.per_channel_symmetric), ConfigError,
         ("got qscheme", "PerChannelMinMaxObserver.with_args(symmetric=True, ...)")),
    Case("observer settings", "ch_axis=3 for a 2-d activation", lambda _: _per_channel_activation_on(_inputs(2, 8)),
         ConfigError, ("node 'x'", "ch_axis=3", "shape (2, 8)", "[-2, 1]")),
    Case("fxq.load", "a missing path", lambda tmp: fxq.load(tmp / "missing.pt"), LoadError,
         ("cannot read '<tmp>/missing.pt'", "No such file"), chained=True),
    Case("fxq.load", "an empty file", _empty, LoadError, ("'<tmp>/empty.pt' is damaged", "EOFError"), chained=True),
    Case("fxq.load", "random bytes", _random_bytes, LoadError, ("'<tmp>/noise.pt' is damaged", "UnpicklingError"),
         chained=True),
    Case("fxq.load", "a truncated file", _truncated, LoadError, ("'<tmp>/cut.pt' is damaged", "save the model again"),
         chained=True),
    Case("fxq.load", "a zip without its pickle", _payload_missing, LoadError,
         ("'<tmp>/hollow.pt' is damaged", "data.pkl"), chained=True),
    Case("fxq.load", "a plain torch.save file (a pickle)", _plain_torch_save, LoadError,
         ("holds pickled objects", "fxq.load never runs code from a file"), chained=True),
    Case("fxq.load", "a pickle that would run code when read", _pickle_that_runs_code, LoadError,
         ("'<tmp>/tampered.pt' holds pickled objects", "fxq.load never runs code"), chained=True),
    Case("fxq.load", "a graph edited to call os.system", lambda tmp: _graph_calling(tmp, "os:system"), LoadError,
         ("calls os:system", "does not allow a graph to call")),
    Case("fxq.load", "a graph edited to call torch.load", lambda tmp: _graph_calling(tmp, "torch:load"), LoadError,
         ("calls torch:load", "does not allow a graph to call")),
    Case("fxq.load", "an fxq payload with fields missing", _fields_missing, LoadError,
         ("'<tmp>/partial.pt' is damaged", "lacks ['model', 'meta']")),
)


def raised(case: Case, tmp: Path) -> FxqError:
    """The error ``case`` raises (any other outcome fails)."""
    with pytest.raises(case.error) as caught:
        case.trigger(tmp)
    return caught.value


def normalised(message: str, tmp: Path) -> str:
    """``message`` without what changes from run to run: the scratch directory and object addresses."""
    return re.sub(r"0x[0-9a-f]{6,}", "0x...", message.replace(str(tmp), "<tmp>"))


@pytest.mark.parametrize("case", CASES, ids=[f"{c.group}: {c.name}" for c in CASES])
def test_each_bad_input_gets_its_error_and_message(case, tmp_path, capsys):
    error = raised(case, tmp_path)
    message = normalised(str(error), tmp_path)
    for fragment in case.fragments:
        assert fragment in message
    if case.chained:
        assert error.__cause__ is not None
    assert "FX-traced Module" not in capsys.readouterr().err  # torch prints no traceback of the generated code


def test_observer_settings_are_refused_where_written_even_when_the_error_is_the_default():
    """A factory is checked when written; prepare would otherwise be the first to build the observer."""
    with pytest.raises(ConfigError, match="qscheme"):
        fxq.QConfig(activation=MinMaxObserver.with_args(qscheme=torch.per_tensor_symmetric))
    assert MinMaxObserver.with_args(dtype=torch.qint8, symmetric=True, quant_min=-127, quant_max=127)() is not None


def test_variable_batch_and_valid_inputs_still_run():
    assert _mlp()(torch.randn(5, 8)).shape == (5, 4)
    assert _mlp()(torch.randn(3, 5, 8)).shape == (3, 5, 4)
    assert _conv()(torch.randn(2, 3, 12, 12)).shape == (2, 4, 10, 10)


def test_an_exported_model_keeps_its_dynamic_batch_and_explains_a_fixed_dimension():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fxq.quantize(_Mlp().eval(), _inputs(3, 8), [_inputs(3, 8)] * 2, backend="x86", capture="export")
    assert model(torch.randn(5, 8)).shape == (5, 4)
    with pytest.raises(InputError, match=r"input 'x' has shape \(5, 7\), where the example inputs had \(3, 8\)"):
        model(torch.randn(5, 7))


def test_an_error_the_inputs_do_not_explain_is_re_raised_unchanged():
    model = copy.deepcopy(_mlp())
    boom = ValueError("boom")

    def fail(*_):
        raise boom

    model.fc.forward = fail
    with pytest.raises(ValueError) as caught:
        model(torch.randn(2, 8))
    assert caught.value is boom


def test_the_guard_survives_deepcopy_save_and_torch_save_and_leaves_the_code_alone(tmp_path):
    model = _mlp()
    fxq.save(model, tmp_path / "m.pt")
    torch.save(model, tmp_path / "plain.pt")
    copies = [copy.deepcopy(model), fxq.load(tmp_path / "m.pt"), torch.load(tmp_path / "plain.pt", weights_only=False)]
    for other in copies:
        with pytest.raises(InputError, match="node 'fc'.*expects 8 features"):
            other(torch.randn(2, 7))
        assert "try" not in other.code and "fxq" not in other.code
    assert copies[0].code == model.code  # (re-tracing after loading may rename nodes)


def render_docs(tmp: Path) -> str:
    """docs/errors.md: one table row per case, with the message the case actually gets."""
    lines = [
        "# Errors fxq gives for bad inputs",
        "",
        "Generated from `tests/e2e/test_bad_inputs.py` (`CASES`) by",
        "`python -m tests.e2e.test_bad_inputs --write-docs`; a test fails when this page is out of date.",
        "Every error derives from `fxq.FxqError`; where fxq explains an error raised by torch, the original is",
        "chained (`raise ... from err`) and nothing is lost. `<tmp>` stands for the directory of the file.",
    ]
    group = None
    for case in CASES:
        if case.group != group:
            group = case.group
            lines += ["", f"## {group}", "", "| case | error | message |", "|---|---|---|"]
        message = normalised(str(raised(case, tmp)), tmp).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {case.name} | `{case.error.__name__}` | {message} |")
    return "\n".join(lines) + "\n"


def test_docs_errors_md_is_up_to_date(tmp_path):
    assert DOC.read_text() == render_docs(tmp_path), "regenerate: python -m tests.e2e.test_bad_inputs --write-docs"


def _write_docs() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        DOC.write_text(render_docs(Path(tmp)))
    print(f"wrote {DOC}")


if __name__ == "__main__" and sys.argv[1:] == ["--write-docs"]:
    _write_docs()
