import math

import pytest
import torch

from tests.models import MODEL_NAMES, example_inputs, make_model, sqnr

TRACEABLE = [name for name in MODEL_NAMES if name != "untraceable"]


@pytest.mark.parametrize("name", TRACEABLE)
def test_model_traces_and_matches_eager(name):
    model = make_model(name)
    x = example_inputs(name)
    gm = torch.fx.symbolic_trace(make_model(name))
    expected = model(*x)
    assert torch.allclose(gm(*x), expected, atol=1e-6)
    assert torch.isfinite(expected).all() and expected.std() > 0


def test_untraceable_model_fails_plain_fx():
    with pytest.raises(Exception, match="control flow|Proxy|symbolically traced"):
        torch.fx.symbolic_trace(make_model("untraceable"))


def test_sqnr_by_hand():
    ref = torch.tensor([3.0, 4.0])  # norm 5
    assert sqnr(ref, ref.clone()) == math.inf
    assert sqnr(ref, ref + torch.tensor([0.05, 0.0])) == pytest.approx(20 * math.log10(5 / 0.05))
