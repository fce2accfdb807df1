"""torch.ao.quantization's names on fxq, for scripts leaving the deprecated API: change the import line.

    from fxq.compat import get_default_qconfig_mapping, prepare_fx, convert_fx   # was torch.ao.quantization...

FX mode (``prepare_fx``, ``prepare_qat_fx``, ``convert_fx``, ``convert_to_reference_fx``, ``fuse_fx``), eager
mode (``QuantStub``/``DeQuantStub``, ``fuse_modules``, ``prepare``/``convert`` driven by ``model.qconfig``,
``quantize_dynamic``), and the qconfig and observer names, ``qscheme=`` included. Objects built with torch.ao
itself are translated wherever these take a mapping or qconfig. docs/migrating.md lists every name and what
behaves differently.
"""

from fxq.compat.eager import (
    DeQuantStub,
    EagerPrepared,
    QuantStub,
    convert,
    fuse_modules,
    prepare,
    quantize_dynamic,
)
from fxq.compat.fx import (
    PrepareCustomConfig,
    convert_fx,
    convert_to_reference_fx,
    fuse_fx,
    prepare_fx,
    prepare_qat_fx,
)
from fxq.compat.names import (
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
    PlaceholderObserver,
    QConfig,
    QConfigMapping,
    default_dynamic_qconfig,
    default_histogram_observer,
    default_observer,
    default_per_channel_weight_observer,
    default_weight_observer,
    float16_dynamic_qconfig,
    float_qparams_weight_only_qconfig,
    float_qparams_weight_only_qconfig_4bit,
    get_default_qat_qconfig,
    get_default_qat_qconfig_mapping,
    get_default_qconfig,
    get_default_qconfig_mapping,
)

__all__ = [
    "DeQuantStub", "EagerPrepared", "HistogramObserver", "MinMaxObserver", "MovingAverageMinMaxObserver",
    "MovingAveragePerChannelMinMaxObserver", "PerChannelMinMaxObserver", "PlaceholderObserver",
    "PrepareCustomConfig", "QConfig", "QConfigMapping", "QuantStub", "convert", "convert_fx",
    "convert_to_reference_fx", "default_dynamic_qconfig", "default_histogram_observer", "default_observer",
    "default_per_channel_weight_observer", "default_weight_observer", "float16_dynamic_qconfig", "float_qparams_weight_only_qconfig",
    "float_qparams_weight_only_qconfig_4bit", "fuse_fx",
    "fuse_modules", "get_default_qat_qconfig", "get_default_qat_qconfig_mapping", "get_default_qconfig",
    "get_default_qconfig_mapping", "prepare", "prepare_fx", "prepare_qat_fx", "quantize_dynamic",
]
