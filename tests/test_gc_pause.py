import gc

import pytest
import torch
from torch import nn

import fxq
from fxq.gc_pause import paused_gc


@pytest.fixture
def restore_gc():
    was = gc.isenabled()
    yield
    (gc.enable if was else gc.disable)()


def test_collector_is_paused_inside_and_restored_after(restore_gc):
    gc.enable()
    with paused_gc():
        assert not gc.isenabled()
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block does not re-enable early
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled(restore_gc):
    gc.disable()
    with paused_gc():
        pass
    assert not gc.isenabled()


def test_collector_is_restored_when_prepare_fails(restore_gc):
    gc.enable()
    with pytest.raises(fxq.FxqError):
        fxq.prepare(nn.Linear(4, 4), fxq.get_default_qconfig_mapping("x86"), (torch.randn(2, 4),), backend="nope")
    assert gc.isenabled()
    prepared = fxq.prepare(nn.Linear(4, 4), fxq.get_default_qconfig_mapping("x86"), (torch.randn(2, 4),))
    prepared(torch.randn(2, 4))
    fxq.convert(prepared)
    assert gc.isenabled()
