"""Regenerate the numpy-only golden fixture in tests/fixtures/tiny-golden/.

A tiny random XLMRobertaForSequenceClassification (vocab 1000, hidden 32, 4 heads, intermediate 37,
2 layers, 2 labels) saved with save_pretrained(safe_serialization=True), plus golden.npz holding a padded
batch of token ids and transformers' outputs for it in float32 and float64: logits, every hidden state,
every attention tensor. tests/test_fixtures.py checks xlmr_np against it without torch installed.

Run from the repository root:  python tools/make_fixtures.py   (needs the test extra: torch, transformers)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tiny-golden"
FORMAT = 1  # bump when the file layout changes; the test refuses other versions


def main():
    torch.manual_seed(1234)
    config = XLMRobertaConfig(
        vocab_size=1000,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=66,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        layer_norm_eps=1e-5,
        num_labels=2,
        initializer_range=0.2,
    )
    config._attn_implementation = "eager"
    model = XLMRobertaForSequenceClassification(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.1)
    if OUT.exists():
        shutil.rmtree(OUT)
    model.save_pretrained(OUT, safe_serialization=True)

    rng = np.random.default_rng(1234)
    lengths = [17, 5, 64, 9]
    input_ids = np.full((len(lengths), max(lengths)), config.pad_token_id, dtype=np.int64)
    attention_mask = np.zeros_like(input_ids)
    for b, n in enumerate(lengths):
        input_ids[b, :n] = rng.integers(4, config.vocab_size, size=n)
        input_ids[b, [0, n - 1]] = [0, 2]  # <s> ... </s>
        attention_mask[b, :n] = 1
    arrays = {"input_ids": input_ids, "attention_mask": attention_mask}
    for dtype, tag in ((torch.float32, "float32"), (torch.float64, "float64")):
        with torch.inference_mode():
            out = model.to(dtype)(
                input_ids=torch.from_numpy(input_ids),
                attention_mask=torch.from_numpy(attention_mask),
                output_hidden_states=True,
                output_attentions=True,
            )
        arrays[f"{tag}/logits"] = out.logits.numpy()
        for i, h in enumerate(out.hidden_states):
            arrays[f"{tag}/hidden_states/{i}"] = h.numpy()
        for i, a in enumerate(out.attentions):
            arrays[f"{tag}/attentions/{i}"] = a.numpy()
    np.savez_compressed(OUT / "golden.npz", **arrays)
    provenance = {
        "format": FORMAT,
        "generated_by": "python tools/make_fixtures.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "attn_implementation": "eager",
    }
    (OUT / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(f"wrote {OUT}: {sorted(p.name for p in OUT.iterdir())}")


if __name__ == "__main__":
    main()
