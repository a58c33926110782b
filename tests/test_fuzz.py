"""Property-based fuzzing (hypothesis) of everything that reads what a user gives: the line, TSV and JSONL
readers, the config parser, the safetensors header parser, the score-cache reader, the tokenizer entry
points and the CLI's argument handling through `main(argv)`.

The property is the same everywhere: any input ends in a valid result or in one of the package's own
errors (an XlmrNpError subclass), never in IndexError, KeyError, TypeError, UnicodeDecodeError,
RecursionError or MemoryError, and the CLI never prints a traceback. Where a reference exists the
result is also compared with it (the safetensors library, the tokenizer on the whole text).

Budgets: a fixed, derandomized budget in CI (seconds); `XLMR_NP_FUZZ=long` multiplies every budget by 50
(XLMR_NP_FUZZ_FACTOR to choose another factor) and draws fresh random examples (minutes).
XLMR_NP_FUZZ_REPORT=FILE writes the counts of inputs tried and how each ended, per target, as JSON:

    XLMR_NP_FUZZ=long XLMR_NP_FUZZ_REPORT=fuzz.json python -m pytest -q tests/test_fuzz.py
"""

from __future__ import annotations

import collections
import io
import json
import math
import os
import signal
import socket
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")  # in the test extra
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from xlmr_np.cli import build_parser, main  # noqa: E402
from xlmr_np.cmteb.score_cache import ScoreCache, pair_key, read_score_file  # noqa: E402
from xlmr_np.commands.common import read_lines  # noqa: E402
from xlmr_np.commands.rerank import read_documents  # noqa: E402
from xlmr_np.commands.score import read_pairs  # noqa: E402
from xlmr_np.config import XLMRobertaConfig  # noqa: E402
from xlmr_np.errors import XlmrNpError  # noqa: E402
from xlmr_np.testing import TINY, xlmr_tokenizer_json  # noqa: E402
from xlmr_np.tokenizer import PairTokenizer, check_pairs, unicode_problem  # noqa: E402
from xlmr_np.weights import read_safetensors  # noqa: E402

LONG = os.environ.get("XLMR_NP_FUZZ") == "long"
LONG_FACTOR = int(os.environ.get("XLMR_NP_FUZZ_FACTOR", "50"))
_common = dict(
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
settings.register_profile("xlmr-np-ci", derandomize=True, database=None, **_common)
settings.register_profile("xlmr-np-long", **_common)
PROFILE = settings.get_profile("xlmr-np-long" if LONG else "xlmr-np-ci")


def budget(examples: int) -> settings:
    return settings(PROFILE, max_examples=examples * (LONG_FACTOR if LONG else 1))


# ---- counting: every input tried, and how it ended ----

TALLY: collections.Counter = collections.Counter()


def outcome(target: str, call):
    """Run call(); count "valid" or "rejected" (the package's own error); anything else propagates and
    fails the property."""
    try:
        result = call()
    except XlmrNpError as e:
        TALLY[target, "rejected"] += 1
        return e
    TALLY[target, "valid"] += 1
    return result


def expect(**targets: str):
    """Declare what a fuzz test's inputs must include, per target: "valid" (some accepted), "rejected" (some
    refused with the package's own error) or "both". A property that holds because every input was
    refused proves nothing: the fixture below fails the test unless each target ended both ways asked."""

    def mark(test):
        test.expected_outcomes = targets
        return test

    return mark


@pytest.fixture(autouse=True)
def fuzz_report(request):
    """After each test: its targets ended as declared by @expect, and the counts so far (written after every
    test, so that a long run stopped early still reports)."""
    before = collections.Counter(TALLY)
    yield
    ran = TALLY - before
    for target, wanted in getattr(request.function, "expected_outcomes", {}).items():
        for kind in ("valid", "rejected") if wanted == "both" else (wanted,):
            assert ran[target, kind] > 0, (
                f"{target}: no input ended {kind} ({ran[target, 'valid']} valid, {ran[target, 'rejected']} "
                f"rejected): the strategy misses what it is meant to cover"
            )
    report: dict = {}
    for (target, kind), n in sorted(TALLY.items()):
        report.setdefault(target, {"tried": 0, "valid": 0, "rejected": 0})
        report[target][kind] += n
        report[target]["tried"] += n
    report["total"] = {k: sum(r[k] for r in report.values()) for k in ("tried", "valid", "rejected")}
    if os.environ.get("XLMR_NP_FUZZ_REPORT"):
        Path(os.environ["XLMR_NP_FUZZ_REPORT"]).write_text(json.dumps(report, indent=1) + "\n")
    print(f"fuzz: this test {dict(sorted(ran.items()))}; so far {json.dumps(report['total'])}", file=sys.stderr)


# ---- strategies ----

# every code point, lone surrogates included (and drawn often: undecodable bytes and broken JSON escapes)
ANY_CHAR = st.characters(exclude_categories=()) | st.sampled_from(["\ud800", "\udbff", "\udc80", "\udcff", "\udfff"])
REAL_CHAR = st.characters(exclude_categories=["Cs"])


def any_text(max_size: int) -> st.SearchStrategy[str]:
    return st.lists(ANY_CHAR, max_size=max_size).map("".join)  # st.text() would drop the surrogates


ANY_TEXT = any_text(40)
# text a user plausibly sends, with the separators str.splitlines() would split at
LINE_TEXT = st.text(
    st.one_of(REAL_CHAR, st.sampled_from("\t\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\ufeff ")), max_size=30
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | any_text(8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def mutate(data: bytes, edits) -> bytes:
    """Apply (position, kind, byte) edits: overwrite, insert or delete one byte at a relative position."""
    out = bytearray(data)
    for where, kind, byte in edits:
        if not out:
            out.append(byte)
            continue
        i = int(where * len(out)) % len(out)
        if kind == 0:
            out[i] = byte
        elif kind == 1:
            out.insert(i, byte)
        else:
            del out[i]
    return bytes(out)


EDITS = st.lists(
    st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 2), st.integers(0, 255)), min_size=1, max_size=6
)


# ---------------------------------------------------------------------------------------------------
# Readers


@st.composite
def _lines(draw):
    lines = draw(st.lists(LINE_TEXT.filter(lambda s: "\n" not in s and not s.endswith("\r")), max_size=8))
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = "x" + lines[0]
    return lines


@expect(read_lines="valid")
@budget(150)
@hypothesis.given(lines=_lines(), final_newline=st.booleans(), bom=st.booleans())
def test_read_lines_round_trips_any_lines(tmp_path_factory, lines, final_newline, bom):
    path = tmp_path_factory.mktemp("lines", numbered=True) / "f.txt"
    # the final newline is optional, except after an empty last line (which it alone makes a line)
    ends = lines and (final_newline or lines[-1] == "")
    text = "\n".join(lines) + ("\n" if ends else "")
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode("utf-8"))
    got = outcome("read_lines", lambda: read_lines(str(path)))
    assert got == list(enumerate(lines, start=1))


TSV_LINES = st.lists(st.tuples(LINE_TEXT, LINE_TEXT).map("\t".join), max_size=4).map(lambda ls: "\n".join(ls) + "\n")


@expect(read_lines="both", read_pairs="both", read_documents="both")
@budget(200)
@hypothesis.given(
    data=st.binary(max_size=200)
    | LINE_TEXT.map(lambda s: s.encode("utf-8"))
    | TSV_LINES.map(lambda s: s.encode("utf-8")),
    jsonl=st.booleans(),
)
def test_readers_on_any_bytes(tmp_path_factory, data, jsonl):
    path = str(tmp_path_factory.mktemp("bytes", numbered=True) / "f")
    Path(path).write_bytes(data)
    lines = outcome("read_lines", lambda: read_lines(path))
    pairs = outcome("read_pairs", lambda: read_pairs(path, jsonl))
    documents = outcome("read_documents", lambda: read_documents(path, jsonl))
    if isinstance(lines, list):
        assert len(lines) == data.count(b"\n") + (not data.endswith(b"\n") and bool(data))
    if isinstance(pairs, tuple):
        assert len(pairs[0]) == len(lines) and all(unicode_problem(q + d) is None for q, d in pairs[0])
    if isinstance(documents, list):
        assert len(documents) == sum(1 for _, line in lines if line.strip())


@expect(read_pairs="both", read_documents="both")
@budget(200)
@hypothesis.given(
    values=st.lists(
        JSON_VALUES
        | st.fixed_dictionaries({"query": JSON_VALUES, "document": JSON_VALUES})
        | st.fixed_dictionaries({"query": ANY_TEXT, "document": ANY_TEXT}, optional={"id": JSON_VALUES})
        | st.fixed_dictionaries({"text": ANY_TEXT})
        | ANY_TEXT,
        min_size=1,
        max_size=5,
    ),
    ascii_only=st.booleans(),
)
def test_jsonl_readers_on_any_json_values(tmp_path_factory, values, ascii_only):
    path = str(tmp_path_factory.mktemp("jsonl", numbered=True) / "f.jsonl")
    Path(path).write_text(
        "".join(json.dumps(v, ensure_ascii=ascii_only) + "\n" for v in values), "utf-8", errors="surrogatepass"
    )
    pairs = outcome("read_pairs", lambda: read_pairs(path, True))
    documents = outcome("read_documents", lambda: read_documents(path, True))
    # a pair is usable if its texts are real characters and its line is UTF-8 (a raw surrogate anywhere,
    # written unescaped, makes the whole file unreadable)
    # written unescaped, makes the whole file unreadable); judged on what the JSON means: the escapes
    # "\ud800\udc00" of two surrogates of a pair read back as one real character, U+10000
    usable = [
        v
        for v in map(lambda v: json.loads(json.dumps(v)), values)
        if isinstance(v, dict)
        and isinstance(v.get("query"), str)
        and isinstance(v.get("document"), str)
        and not unicode_problem(v["query"] + v["document"])
    ]
    if not ascii_only and any(unicode_problem(json.dumps(v, ensure_ascii=False)) for v in values):
        usable = []
    assert isinstance(pairs, tuple) == (len(usable) == len(values))
    if isinstance(documents, list):
        assert len(documents) == len(values)


# ---------------------------------------------------------------------------------------------------
# config.json


REAL_CONFIG = dict(
    TINY, model_type="xlm-roberta", architectures=["XLMRobertaForSequenceClassification"], id2label={"0": "LABEL_0"}
)


@expect(**{"config fields": "both"})
@budget(300)
@hypothesis.given(
    changes=st.dictionaries(
        st.sampled_from(sorted(REAL_CONFIG) + ["num_labels", "is_decoder", "position_embedding_type"]),
        JSON_VALUES | st.just("<delete>"),
        max_size=3,
    )
)
def test_config_from_any_field_values(changes):
    raw = {k: v for k, v in {**REAL_CONFIG, **changes}.items() if v != "<delete>"}
    config = outcome("config fields", lambda: XLMRobertaConfig.from_dict(raw))
    if raw == REAL_CONFIG:  # nothing changed, or changed to the same values: a good config stays good
        assert isinstance(config, XLMRobertaConfig), config
    if isinstance(config, XLMRobertaConfig):
        assert config.hidden_size % config.num_attention_heads == 0 and config.max_tokens >= 2


@expect(**{"config file": "both"})
@budget(200)
@hypothesis.given(
    data=st.binary(max_size=300)
    | st.builds(mutate, st.just(json.dumps(REAL_CONFIG).encode()), EDITS)
    | st.builds(lambda indent: json.dumps(REAL_CONFIG, indent=indent).encode(), st.none() | st.integers(0, 4))
)
def test_config_file_of_any_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("config", numbered=True) / "config.json"
    path.write_bytes(data)
    config = outcome("config file", lambda: XLMRobertaConfig.from_file(path))
    try:
        same = json.loads(data) == REAL_CONFIG
    except ValueError:  # not JSON (UnicodeDecodeError included)
        same = False
    if same:  # the good config, however it is laid out, is read
        assert isinstance(config, XLMRobertaConfig), config


# ---------------------------------------------------------------------------------------------------
# safetensors headers: a small file written by the safetensors library, and the tiny model's real header


@pytest.fixture(scope="module")
def small_safetensors(tmp_path_factory) -> bytes:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    tensors = {
        "a.weight": rng.standard_normal((3, 5)).astype(np.float32),
        "b": np.arange(7, dtype=np.int64),
        "c.half": rng.standard_normal(4).astype(np.float16),
        "d.empty": np.zeros((0, 3), np.float32),
        "e.scalar": np.array(2.5, np.float64),
        "f.bytes": np.arange(5, dtype=np.uint8),
    }
    path = tmp_path_factory.mktemp("st") / "small.safetensors"
    save_file(tensors, str(path), metadata={"format": "np"})
    return path.read_bytes()


@pytest.fixture(scope="module")
def model_header() -> tuple[bytes, int]:
    """The committed golden model's header as transformers wrote it, and the size of its data section."""
    path = Path(__file__).parent / "fixtures" / "tiny-golden" / "model.safetensors"
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = f.read(n)
    return header, path.stat().st_size - 8 - n


def split(file: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", file[:8])
    return json.loads(file[8 : 8 + n]), file[8 + n :]


def forge(header, data: bytes, length_delta: int = 0) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode("utf-8", "surrogatepass")
    return struct.pack("<Q", max(0, len(raw) + length_delta)) + raw + data


FIELD_EDIT = st.tuples(
    st.integers(0, 10),
    st.sampled_from(["dtype", "shape", "data_offsets", "<entry>", "<new>"]),
    JSON_VALUES
    | st.lists(st.integers(-(2**65), 2**65), max_size=4)
    | st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "f32", ""]),
)


def edit_header(header: dict, edits) -> dict:
    header = json.loads(json.dumps(header))
    keys = [k for k in header if k != "__metadata__"]
    for index, field, value in edits:
        key = keys[index % len(keys)]
        if field == "<entry>":
            header[key] = value
        elif field == "<new>":
            header[f"new.{index}"] = value
        elif isinstance(header[key], dict):
            header[key][field] = value
    return header


def check_loaded(tensors: dict, file: bytes) -> None:
    """A header we accept is one the safetensors library accepts too, with the same arrays."""
    from safetensors.numpy import load

    for raw in tensors.values():
        assert raw.array.size == math.prod(raw.array.shape)
    try:
        reference = load(file)
    except Exception:  # noqa: BLE001 - the library is stricter about some metadata; nothing to compare then
        return
    assert sorted(reference) == sorted(tensors)
    for key, value in reference.items():
        ours = tensors[key].array
        assert ours.shape == value.shape and ours.tobytes() == value.tobytes(), key


@expect(**{"safetensors header": "both"})
@budget(300)
@hypothesis.given(
    how=st.sampled_from(["bytes", "fields", "length"]),
    edits=EDITS,
    fields=st.lists(FIELD_EDIT, min_size=1, max_size=3),
    delta=st.integers(-20, 20) | st.integers(-(2**63), 2**64 - 1),
)
def test_safetensors_header_mutations_load_or_raise_checkpoint_error(
    tmp_path_factory, small_safetensors, how, edits, fields, delta
):
    header, data = split(small_safetensors)
    raw = json.dumps(header).encode()
    if how == "bytes":
        file = forge(mutate(raw, edits), data)
    elif how == "fields":
        file = forge(edit_header(header, fields), data)
    else:
        file = struct.pack("<Q", max(0, min(2**64 - 1, len(raw) + delta))) + raw + data
    path = tmp_path_factory.mktemp("st", numbered=True) / "model.safetensors"
    path.write_bytes(file)
    for mmap in (True, False):
        tensors = outcome("safetensors header", lambda mmap=mmap: read_safetensors(path, mmap=mmap))
        if file == small_safetensors:  # the length field set to the header's own length: the file as written
            assert isinstance(tensors, dict), tensors
        if isinstance(tensors, dict):
            check_loaded(tensors, file)


@expect(**{"safetensors header (model)": "both"})
@budget(60)
@hypothesis.given(fields=st.lists(FIELD_EDIT, min_size=1, max_size=3), edits=EDITS, by_bytes=st.booleans())
def test_real_model_header_mutations(tmp_path_factory, model_header, fields, edits, by_bytes):
    """The golden model's 4.5 KB header, as transformers wrote it, with its 196 KB data section as a sparse
    file (nothing is read)."""
    raw, data_len = model_header
    header = mutate(raw, edits) if by_bytes else json.dumps(edit_header(json.loads(raw), fields)).encode()
    path = tmp_path_factory.mktemp("model-st", numbered=True) / "model.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + data_len)
    tensors = outcome("safetensors header (model)", lambda: read_safetensors(path))
    if isinstance(tensors, dict):  # what is accepted lies inside the data section, as the header says
        for t in tensors.values():
            assert 8 + len(header) <= t.offset and t.offset + t.array.nbytes <= path.stat().st_size, t.key
            assert t.array.size == math.prod(t.array.shape), t.key


# ---------------------------------------------------------------------------------------------------
# The evaluation's score cache file


@pytest.fixture(scope="module")
def score_file(tmp_path_factory) -> tuple[bytes, dict]:
    directory = tmp_path_factory.mktemp("cache")
    header = {"model_fingerprint": "f", "settings": {}, "task": "t", "dataset": "d", "revision": "r"}
    with ScoreCache(directory, header, "all") as cache:
        cache.append([pair_key("q", str(i)) for i in range(6)], np.linspace(-3, 3, 6))
        cache.append([pair_key("q", str(i)) for i in range(6, 9)], [0.5, 1.5, 2.5])
    return (directory / "scores-all.bin").read_bytes(), dict(header, writer="all")


@expect(**{"score cache file": "both"})
@budget(300)
@hypothesis.given(edits=EDITS, cut=st.integers(0, 400))
def test_score_cache_file_mutations(tmp_path_factory, score_file, edits, cut):
    data, header = score_file
    path = tmp_path_factory.mktemp("scores", numbered=True) / "scores-all.bin"
    path.write_bytes(mutate(data, edits)[:cut] if cut < len(data) else mutate(data, edits))
    read = outcome("score cache file", lambda: read_score_file(path, header))
    if isinstance(read, tuple):
        scores, end = read
        assert all(np.isfinite(s) for s in scores.values()) and end <= path.stat().st_size


# ---------------------------------------------------------------------------------------------------
# Tokenizer entry points


@pytest.fixture(scope="module")
def xlmr_tokenizer():
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(xlmr_tokenizer_json()))


def reference_ids(tokenizer: PairTokenizer, pair) -> list[int]:
    """The ids without the prefix clip: the whole texts through the tokenizer, as before the clip."""
    if tokenizer.truncation == "longest_first":
        return tokenizer._tokenizer.encode_batch([pair])[0].ids
    return [e.ids for e, _ in tokenizer._encode_only_second([pair])][0]


@expect(tokenizer="both")
@budget(300)
@hypothesis.given(
    query=ANY_TEXT,
    document=ANY_TEXT,
    max_length=st.integers(6, 64),
    truncation=st.sampled_from(["longest_first", "only_second"]),
)
def test_tokenizer_any_unicode(xlmr_tokenizer, query, document, max_length, truncation):
    tokenizer = PairTokenizer(xlmr_tokenizer, max_length=max_length, truncation=truncation)
    encoded = outcome("tokenizer", lambda: tokenizer.encode([(query, document)]))
    if unicode_problem(query) or unicode_problem(document):
        assert isinstance(encoded, XlmrNpError)
        return
    [pair] = encoded
    assert pair.ids[0] == 0 and pair.ids[-1] == 2 and len(pair.ids) <= max_length
    assert all(0 <= i < 250002 for i in pair.ids)
    assert pair.ids == reference_ids(tokenizer, (query, document))


HUGE_UNIT = st.text(st.one_of(REAL_CHAR, st.sampled_from(" 北京是中国的首都 \u3000\t  ")), min_size=1, max_size=12)


@expect(**{"tokenizer (huge)": "valid"})
@budget(40)
@hypothesis.given(
    unit=HUGE_UNIT,
    repeat=st.integers(50, 8_000),
    query_repeat=st.integers(1, 100),
    max_length=st.integers(32, 128),
    truncation=st.sampled_from(["longest_first", "only_second"]),
)
def test_tokenizer_huge_texts_match_the_whole_text(xlmr_tokenizer, unit, repeat, query_repeat, max_length, truncation):
    """Documents of up to 96,000 characters: the bounded prefix gives the whole text's ids.

    The reference, the tokenizers library on the whole pair, builds every combination of the two texts'
    max_length pieces (a long query and a long document at a small max_length exhaust the memory), so
    the query stays short here; test_cli_errors checks a long query beside a long document."""
    tokenizer = PairTokenizer(xlmr_tokenizer, max_length=max_length, truncation=truncation)
    pair = ("q " * query_repeat, unit * repeat)
    [encoded] = outcome("tokenizer (huge)", lambda: tokenizer.encode([pair]))
    assert encoded.ids == reference_ids(tokenizer, pair)


OBJECTS = st.recursive(
    st.none()
    | st.integers()
    | any_text(5)
    | st.binary(max_size=3)
    | st.builds(np.array, st.lists(st.text(max_size=3), max_size=3)),
    lambda inner: (
        st.lists(inner, max_size=3) | st.tuples(inner, inner) | st.dictionaries(st.text(max_size=3), inner, max_size=2)
    ),
    max_leaves=8,
)


def real_text_pairs(value) -> bool:
    """A non-empty list of (str, str) tuples of real characters: what check_pairs must accept."""
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(
            isinstance(p, tuple) and len(p) == 2 and all(isinstance(t, str) and not unicode_problem(t) for t in p)
            for p in value
        )
    )


@expect(check_pairs="both")
@budget(300)
@hypothesis.given(pairs=OBJECTS | st.lists(st.tuples(ANY_TEXT, ANY_TEXT) | st.lists(ANY_TEXT, max_size=3), max_size=3))
def test_check_pairs_on_any_python_value(pairs):
    checked = outcome("check_pairs", lambda: check_pairs(pairs))
    if real_text_pairs(pairs):
        assert isinstance(checked, list), checked
    if isinstance(checked, list):
        assert checked and all(isinstance(q, str) and isinstance(d, str) for q, d in checked)


# ---------------------------------------------------------------------------------------------------
# The CLI through main(argv)


@pytest.fixture
def cli_world(tiny_dir, tmp_path_factory, monkeypatch):
    """Input files of every kind, an offline hub, a server that returns at once, the working directory in a temporary
    directory (eval writes eval-results/ there), and the unit tier's tiny model (milliseconds to load)."""
    import huggingface_hub.constants

    runner = pytest.importorskip("xlmr_np.serve.runner")  # the serve extra

    root = tmp_path_factory.mktemp("cli")
    files = {
        "pairs.tsv": b"q\td\nq2\td2 \xe2\x80\xa8 x\n",
        "pairs.jsonl": b'{"query": "q", "document": "d"}\n',
        "docs.txt": b"a\n\nb\n",
        "docs.jsonl": b'"a"\n{"text": "b"}\n',
        "garbage.bin": b"\xff\xfe\x00[",
        "empty.txt": b"",
        "deep.jsonl": b"[" * 5000 + b"\n",
        "shard.json": b"{}",
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "a-directory").mkdir()
    monkeypatch.chdir(root)
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "xdg"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root / "hub"))
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # serve installs a SIGTERM handler

    # `serve` with good arguments builds the app, then must not block the fuzzer (nor bind a port)
    monkeypatch.setattr(runner, "open_listener", lambda host, port, connections: (socket.socket(), connections))
    monkeypatch.setattr(runner, "serve", lambda app, sock, **kwargs: 0)
    return {"model": str(tiny_dir), "files": sorted(files) + ["a-directory", "missing.txt", "-"]}


NUMBER = st.integers(-3, 600).map(str) | st.sampled_from(["", "x", "1e3", "0x10", " 7", "٣", "99999", "-0"])
CHOICE_JUNK = st.sampled_from(["", "x", "LONGEST_FIRST", "--"])
COMMON = {
    "--max-length": st.sampled_from(["0", "-1", "5", "24", "513", "100000", "x", "24.0"]),
    "--truncation": st.sampled_from(["longest_first", "only_second"]) | CHOICE_JUNK,
    "--batch-size": NUMBER,
    "--revision": ANY_TEXT,
    "--in-memory": None,
}
OPTIONS = {
    "rerank": {
        **COMMON,
        "--top-n": NUMBER,
        "--json": None,
        "--raw-scores": None,
        "--windows": None,
        "--window-overlap": NUMBER,
        "--jsonl": None,
        "--documents": "<file>",
    },
    "score": {**COMMON, "--jsonl": None, "--raw-scores": None, "-o": "<out>"},
    "inspect": {
        **COMMON,
        "--unit": st.sampled_from(["word", "token"]) | CHOICE_JUNK,
        "--all": None,
        "--method": st.sampled_from(["remove", "mask"]) | CHOICE_JUNK,
        "--layers": st.sampled_from(["0", "0,1", "0-1", "5", "1-0", "x", ""]),
        "--heads": st.sampled_from(["0", "0-3", "9", "-1", ""]),
        "--color": st.sampled_from(["never", "x"]),
    },
    "serve": {
        **COMMON,
        "--port": NUMBER,
        "--max-documents": NUMBER,
        "--max-body-bytes": NUMBER,
        "--host": st.sampled_from(["127.0.0.1", "::1", "localhost"]),
        "--window-overlap": NUMBER,
        "--served-model-name": ANY_TEXT,
        "--api-key": ANY_TEXT,
        "--max-concurrent-requests": NUMBER,
        "--request-timeout": NUMBER | st.sampled_from(["nan", "inf", "-inf", "1e400"]),
        "--max-batch-tokens": NUMBER,
        "--max-inflight-tokens": NUMBER,
        "--max-inflight-bytes": NUMBER,
        "--max-connections": NUMBER,
        "--keep-alive": NUMBER | st.sampled_from(["nan", "inf"]),
        "--graceful-timeout": NUMBER | st.sampled_from(["nan", "-inf"]),
        "--auto-truncate": None,
    },
    "eval": {
        "--task": st.sampled_from(["CMedQAv1-reranking", "all", "x"]),
        "--batch-size": NUMBER,
        "--processes": NUMBER,
        "--shard": st.sampled_from(["0/2", "2/2", "x", "1/0"]),
        "--max-queries": NUMBER,
        "--seed": NUMBER,
        "--max-length": NUMBER,
        "--out": "<out>",
        "--score-cache": "<out>",
    },
    "merge": {"--out": "<out>"},
}
POSITIONALS = {"rerank": (1, 3), "score": (0, 1), "inspect": (2, 2), "serve": (0, 0), "eval": (0, 0), "merge": (1, 2)}


@st.composite
def argvs(draw, files):
    command = draw(st.sampled_from(sorted(OPTIONS)))
    argv = [command]
    table = OPTIONS[command]
    for option in draw(st.lists(st.sampled_from(sorted(table)), max_size=4, unique=True)):
        value = table[option]
        argv.append(option)
        if value == "<file>":
            argv.append(draw(st.sampled_from(files)))
        elif value == "<out>":
            argv.append(draw(st.sampled_from(["out.txt", "a-directory", "nowhere/out.txt", "pairs.tsv", "new-dir"])))
        elif value is not None:
            argv.append(draw(value))
    if draw(st.integers(0, 9)) > 0:  # mostly the tiny model; sometimes a missing directory or the default repo
        argv += ["--model", "<model>"]
    elif draw(st.booleans()):
        argv += ["--model", "no-such-directory/x/y"]
    low, high = POSITIONALS[command]
    for _ in range(draw(st.integers(low, high))):
        text = draw(st.sampled_from(files) if command in ("score", "merge") else ANY_TEXT)
        argv.append(text)
    if draw(st.integers(0, 5)) == 0:  # anything at all appended
        argv += draw(st.lists(ANY_TEXT, max_size=3))
    return argv


STDIN = st.binary(max_size=60) | st.lists(LINE_TEXT, max_size=4).map(lambda ls: "\n".join(ls).encode())


def run_main(argv, stdin: bytes) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    sys.stdout, sys.stderr = out, err
    try:
        status = main(argv)
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
    return status, out.getvalue(), err.getvalue()


@expect(**{"cli main": "both"})
@budget(150)
@hypothesis.given(data=st.data(), stdin=STDIN)
def test_cli_main_on_any_arguments(cli_world, data, stdin):
    argv = [cli_world["model"] if a == "<model>" else a for a in data.draw(argvs(cli_world["files"]))]
    status, out, err = run_main(argv, stdin)
    TALLY["cli main", "valid" if status == 0 else "rejected"] += 1
    assert status in (0, 1, 2), (status, err)
    assert "Traceback" not in err, err
    if status:
        last = err.rstrip("\n").split("\n")[-1]  # not splitlines(): argparse echoes a "\r" argument as given
        assert last.startswith(("xlmr-np: error: ", f"xlmr-np {argv[0]}: error: ")), err
    if status == 0 and argv[0] in ("rerank", "inspect"):
        assert out


@expect(**{"argument parsing": "both"})
@budget(300)
@hypothesis.given(
    argv=st.lists(
        ANY_TEXT
        | st.sampled_from(
            ["rerank", "score", "serve", "eval", "merge", "bench", "inspect", "--help", "-h", "--", "-o", "--port"]
        ),
        max_size=6,
    )
)
def test_argument_parsing_of_any_argv(argv):
    """Every subcommand's parser (bench's and serve's too, which the full fuzz cannot run): a namespace,
    or argparse's exit with 0 (--help) or 2."""
    parser = build_parser()
    devnull = io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = devnull
    try:
        parser.parse_args(argv)
        TALLY["argument parsing", "valid"] += 1
    except SystemExit as e:
        assert e.code in (0, 2), e.code
        TALLY["argument parsing", "rejected"] += 1
    finally:
        sys.stdout, sys.stderr = saved
