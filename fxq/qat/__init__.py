"""Quantization-aware training: ``prepare_qat`` places fake quantization where ``prepare`` places observers,
training learns weights that survive int8 rounding, ``fxq.convert`` lowers to the same kernels as PTQ."""

from fxq.qat.api import enable_fake_quant, freeze_bn_stats, freeze_observers, prepare_qat
from fxq.qat.batch_norm_statistics import reestimate_bn_stats
from fxq.qat.distillation import distillation_loss, feature_distillation_loss
from fxq.qat.fake_quantize import FakeQuantize, WeightFakeQuantize

__all__ = ["FakeQuantize", "WeightFakeQuantize", "distillation_loss", "enable_fake_quant",
           "feature_distillation_loss", "freeze_bn_stats", "freeze_observers", "prepare_qat", "reestimate_bn_stats"]
