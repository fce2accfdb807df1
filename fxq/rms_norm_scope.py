"""Which modules are RMS norms: graphs spell them as several ops (``x * rsqrt(mean(x**2) + eps) * w``), so no single
op concept says "norm", but the module each op came from does.

Llama, Mistral, Qwen, Gemma, Phi-3 and Mixtral normalise their residual streams with RMS norms where BERT uses
``LayerNorm``; the transformer recipe treats the ops inside them as it treats layer norms (and ``choose_recipe``
counts them as norms). Known by type: ``nn.RMSNorm`` and its subclasses, and by name the Hugging Face convention
(``LlamaRMSNorm``, ``Gemma2RMSNorm``... and T5's ``T5LayerNorm``, an RMS norm despite its name).
"""

from __future__ import annotations

from torch import nn

_NAME_ENDINGS = ("RMSNorm", "T5LayerNorm")


def is_rms_norm(module_type: type | None) -> bool:
    """Whether modules of ``module_type`` are RMS norms."""
    if module_type is None:
        return False
    return issubclass(module_type, nn.RMSNorm) or module_type.__name__.endswith(_NAME_ENDINGS)
