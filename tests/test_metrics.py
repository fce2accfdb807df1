import math

import pytest
import torch

from fxq.metrics import sqnr_db


def test_sqnr_by_hand():
    reference = torch.tensor([3.0, 4.0])  # norm 5
    assert sqnr_db(reference, reference.clone()) == math.inf
    assert sqnr_db(reference, reference + torch.tensor([0.0, 0.05])) == pytest.approx(20 * math.log10(5 / 0.05),
                                                                                       rel=1e-5)
