"""The README's first command, ``fxq demo``, runs end to end and reports what it gained and lost."""

from fxq.cli import main


def test_demo_runs_and_reports(capsys):
    assert main(["demo", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "Decisions after convert" in out and "QuantizedConv+relu" in out
    for line in ("top-1 accuracy", "serialized size", "logits SQNR", "latency"):
        assert line in out, line
