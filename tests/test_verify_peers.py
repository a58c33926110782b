"""verify against independent peers run in this process: TEI- and Cohere-format rerank endpoints backed by
transformers + torch on the same random model (and onnxruntime on its export), clean and with planted
faults.

Each planted fault is one a real engine has shipped (or could): verify must flag it (verdict "differs")
and name it in the first diagnosis line. Peers compute in float32 like the reference unless the fault is
reduced precision, so a clean peer agrees within 1e-4 on logits.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from helpers import SMALL_TOKENIZER, SMALL_VOCAB

from xlmr_np import Reranker
from xlmr_np.testing import build_model, require
from xlmr_np.verify import Verifier, verify_endpoint
from xlmr_np.verify.reference import FLAVOURS

pytestmark = pytest.mark.parity

ATOL = 1e-4
# A request's documents are scored in batches of at most this many padded tokens, as TEI's default
# --max-batch-tokens has them: a 512-token model's request is one batch, an 8,000-token document is alone.
BATCH_TOKENS = 16384
# Faults of the model's computation: the peer's model is changed; the others change what it is given.
PRECISION_FAULTS = ("float16", "float16-compute", "bfloat16-compute", "int8-dynamic")
# A tokenizer_config.json as the hub's XLM-R rerankers ship it: it names XLMRobertaTokenizer, which
# transformers >= 5 rebuilds from the file's pieces instead of running its pipeline.
TOKENIZER_CONFIG = {
    "tokenizer_class": "XLMRobertaTokenizer",
    "model_max_length": 512,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "cls_token": "<s>",
    "sep_token": "</s>",
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "mask_token": "<mask>",
}


def precision_model(model, fault: str | None):
    """The peer's torch model: float16-rounded weights, or a reduced-precision copy computing with SDPA
    (transformers' default attention), or the model itself."""
    import torch

    if fault not in PRECISION_FAULTS:
        return model
    copied = copy.deepcopy(model)
    if fault == "float16":
        return copied.half().float()
    copied.config._attn_implementation = "sdpa"
    if fault == "int8-dynamic":
        return torch.ao.quantization.quantize_dynamic(copied, {torch.nn.Linear}, dtype=torch.qint8)
    return copied.to(torch.float16 if fault == "float16-compute" else torch.bfloat16)


class TorchPeer:
    """A cross-encoder scored with transformers, with planted faults ("strip+float16-compute": two)."""

    def __init__(self, tokenizer, model, fault=None, max_length=512):
        import torch

        self.torch = torch
        self.faults = set(fault.split("+")) if fault else set()
        cut = [int(f.removeprefix("truncate-")) for f in self.faults if f.startswith("truncate-")]
        self.max_length = cut[0] if cut else max_length  # "truncate-N": cut at N tokens, not the model's limit
        self.tokenizer = tokenizer  # transformers' tokenizer, shared: each copy holds ~300 MB
        self.model = precision_model(model, next((f for f in self.faults if f in PRECISION_FAULTS), None))

    def logits(self, query: str, documents: list[str]) -> list[float]:
        """A request's documents in order, in batches of at most BATCH_TOKENS padded tokens."""
        lengths = [len(ids) for ids in self.encode(query, documents, padding=False)["input_ids"]]
        groups: list[list[int]] = []
        for i, n in enumerate(lengths):
            if groups and (len(groups[-1]) + 1) * max(n, *(lengths[j] for j in groups[-1])) <= BATCH_TOKENS:
                groups[-1].append(i)
            else:
                groups.append([i])
        return [x for g in groups for x in self.batch_logits(query, [documents[i] for i in g])]

    def encode(self, query: str, documents: list[str], padding: bool):
        return self.tokenizer(
            [query] * len(documents),
            documents,
            padding=padding,
            return_tensors="pt" if padding else None,
            truncation="only_second" if "only_second" in self.faults else "longest_first",
            max_length=self.max_length,
        )

    def batch_logits(self, query: str, documents: list[str]) -> list[float]:
        torch = self.torch
        batch = self.encode(query, documents, padding=True)
        if "separator" in self.faults:  # <s> q </s><s> d </s>: the second </s> of each row becomes <s>
            for row in batch["input_ids"]:
                first = int((row == self.tokenizer.eos_token_id).nonzero()[0])
                row[first + 1] = self.tokenizer.bos_token_id
        with torch.no_grad():
            if "gelu-head" in self.faults:
                hidden = self.model.roberta(**batch).last_hidden_state[:, 0]  # [B, D]
                head = self.model.classifier
                logits = head.out_proj(torch.nn.functional.gelu(head.dense(hidden)))
            else:
                logits = self.model(**batch).logits
        return logits[:, 0].float().tolist()

    def ranked(self, query: str, documents: list[str], sigmoid: bool) -> list[dict]:
        """Results best first; the "shuffled" fault sorts the documents by length for batching and reports
        positions in that order as indices; "strip" strips the texts and echoes them stripped (infinity)."""
        if "strip" in self.faults:
            query, documents = query.strip(), [d.strip() for d in documents]
        order = list(range(len(documents)))
        if "shuffled" in self.faults:
            order.sort(key=lambda i: -len(documents[i]))
        logits = self.logits(query, [documents[i] for i in order])
        scores = self.torch.sigmoid(self.torch.tensor(logits)).tolist() if sigmoid else logits
        results = [
            {"index": pos if "shuffled" in self.faults else i, "score": s, "text": documents[i]}
            for pos, (i, s) in enumerate(zip(order, scores))
        ]
        return sorted(results, key=lambda r: -r["score"])


def handler_for(peer: TorchPeer, format: str):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            # TEI: raw_scores asks for logits (the sigmoid fault ignores it); Cohere: sigmoid relevance scores;
            # infinity: Cohere's body at /rerank
            texts = "texts" if format == "tei" else "documents"
            if self.path != ("/rerank" if format in ("tei", "infinity") else "/v1/rerank"):
                self.send_error(404)
                return
            if texts not in body:  # another format's body, refused as a validating server does
                self.reply(422, {"detail": f"no {texts!r} in the body"})
                return
            sigmoid = format != "tei" or not body.get("raw_scores", False) or "sigmoid" in peer.faults
            results = peer.ranked(body["query"], body[texts], sigmoid=sigmoid)
            if format == "tei":
                answer: object = [{"index": r["index"], "score": r["score"], "text": r["text"]} for r in results]
            else:
                answer = {
                    "results": [
                        {"index": r["index"], "relevance_score": r["score"], "document": {"text": r["text"]}}
                        for r in results
                    ]
                }
            self.reply(200, answer)

        def reply(self, status: int, answer: object) -> None:
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@pytest.fixture(scope="module")
def spread_model(torch, tmp_path_factory):
    """A tiny random model whose logits spread over about -10..10, as a trained reranker's do; with the small
    tokenizer (helpers.SMALL_TOKENIZER), so that the peers' transformers tokenizer and xlmr_np's each hold
    a few MB, not 300."""
    directory = tmp_path_factory.mktemp("verify-peer-model")
    model = build_model(directory, seed=1, init_std=0.2, head_scale=10.0, vocab_size=SMALL_VOCAB)
    shutil.copy(SMALL_TOKENIZER, directory / "tokenizer.json")
    return directory, model


@pytest.fixture(scope="module")
def hf_tokenizer(spread_model):
    from transformers import XLMRobertaTokenizerFast

    return XLMRobertaTokenizerFast(tokenizer_file=str(spread_model[0] / "tokenizer.json"))


@pytest.fixture(scope="module")
def hub_dir(spread_model, tmp_path_factory):
    """The test model as the hub ships a reranker: its config, weights and tokenizer.json, and a
    tokenizer_config.json naming XLMRobertaTokenizer, which transformers >= 5 rebuilds instead of running
    tokenizer.json's pipeline (transformers 4 runs the file)."""
    directory = tmp_path_factory.mktemp("hub-model")
    shutil.copytree(spread_model[0], directory, dirs_exist_ok=True)
    (directory / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def hub_tokenizer(hub_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(hub_dir)


@pytest.fixture(scope="module")
def verifier(spread_model):
    """The local reference, scored once; its planted-fault variants are cached across the tests."""
    return Verifier(Reranker.from_pretrained(spread_model[0]), model_name="tiny")


@pytest.fixture
def serve():
    servers = []

    def start(peer: TorchPeer, format: str) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(peer, format))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


def table_row(peer: str, setting: str, report) -> str:
    """One row of the table in docs/verify.md: `pytest -m parity tests/test_verify_peers.py -s | grep '^| '`."""
    first = report.diagnosis[0].removeprefix("diagnosis: ").replace("|", "\\|") if report.diagnosis else "-"
    row = f"| {peer} | {setting} | {report.verdict} (exit {report.exit_code}) | {first} |"
    print("\n" + row.replace("\n", " "))
    return row


@pytest.mark.parametrize("format", ["tei", "cohere"])
def test_clean_peer_agrees_within_1e4(format, spread_model, hf_tokenizer, verifier, serve):
    url = serve(TorchPeer(hf_tokenizer, spread_model[1]), format)
    report = verify_endpoint(url, format="auto", atol=ATOL, verifier=verifier)
    table_row(f"transformers peer over HTTP ({format})", "faithful", report)
    max_logit_diff, mean_logit_diff = report.analysis.overall("logit_diff")
    assert report.agrees, str(report)
    assert max_logit_diff <= ATOL, f"max |diff| {max_logit_diff:.3e}, mean {mean_logit_diff:.3e} on logits"
    assert report.analysis.scale.name == ("logits" if format == "tei" else "sigmoid")
    assert f"({format} format" in report.source
    assert all(r.answered for r in report.analysis.results), [r.error for r in report.analysis.results]


# fault -> what the first diagnosis line must name
NAMED = {
    "separator": "joins query and document with </s><s> instead of </s></s>",
    "gelu-head": "applies GELU where the model has tanh",
    "truncate-256": "truncated to 256 tokens (longest_first)",
    "only_second": "only the document is cut (only_second truncation at 512 tokens)",
    "float16": "weights are rounded to float16",
    "sigmoid": "the scores are sigmoid(logit) in (0, 1), not raw logits",
    "shuffled": "results are attached to the wrong documents",
    "strip": "the query and the documents are stripped of leading and trailing whitespace",
    "float16-compute": "the model computes in float16",
    "bfloat16-compute": "the model computes in bfloat16",
    "int8-dynamic": "dynamically quantised to int8 as torch's quantize_dynamic does",
    "strip+float16-compute": "two faults together: the query and the documents are stripped of leading and trailing "
    "whitespace before tokenization; and the model computes in float16",
    "truncate-256+float16": "two faults together: pairs are truncated to 256 tokens (longest_first); and the weights "
    "are rounded to float16",
}
# Reduced-precision faults are reproduced up to the order of their roundings, not within the tolerance.
ROUNDINGS = ("float16-compute", "bfloat16-compute", "int8-dynamic")
FAULTS = ("separator", "gelu-head", "truncate-256", "only_second", "float16", "sigmoid", "shuffled", "strip")


@pytest.mark.parametrize(
    "format, fault",
    [("tei", f) for f in FAULTS + ROUNDINGS + ("strip+float16-compute", "truncate-256+float16")]
    + [("cohere", f) for f in ("separator", "only_second", "shuffled", "strip")],
)
def test_planted_fault_is_flagged_and_named(format, fault, spread_model, hf_tokenizer, verifier, serve):
    url = serve(TorchPeer(hf_tokenizer, spread_model[1], fault=fault), format)
    report = verify_endpoint(url, format=format, atol=ATOL, verifier=verifier)
    lines = report.diagnosis
    table_row(f"transformers peer over HTTP ({format})", f"planted: {fault}", report)
    assert not report.agrees and report.exit_code == 1, str(report)
    assert NAMED[fault] in lines[0], f"first diagnosis line for {fault}: {lines}"
    if fault in ("sigmoid", "shuffled"):
        return
    best = next(h for h in report.analysis.hypotheses if h.cause in lines[0])
    if any(f in ROUNDINGS for f in fault.split("+")):
        assert "the rest is the order of roundings" in lines[0] or "reproduces every answer" in lines[0], lines[0]
        assert best.fits, best
    else:  # the planted variant reproduces the answers exactly
        assert "reproduces every answer within the tolerance" in lines[0], lines[0]
        assert best.max <= ATOL, f"{fault}: closest variant {best.key} still differs by {best.max:.3e}"


def test_stripped_echo_is_not_a_wrong_document(spread_model, hf_tokenizer, verifier, serve):
    """As infinity: a Cohere-style rerank at /rerank, found from the base URL, which echoes the stripped
    text: the indices are right, and verify says so instead of calling the results attached to the wrong
    documents."""
    url = serve(TorchPeer(hf_tokenizer, spread_model[1], fault="strip"), "infinity")
    report = verify_endpoint(url, format="auto", atol=ATOL, verifier=verifier)
    table_row("infinity-like peer (Cohere body at /rerank, found from the base URL)", "planted: strip", report)
    assert report.source.startswith(
        f"{url}/rerank (cohere format; found by --format auto after cohere at /v1/rerank: "
        "HTTP 404; tei at /rerank: HTTP 422: no 'documents' in the body; cohere at /v2/rerank: HTTP 404)"
    ), report.source
    kinds = [f.kind for f in report.analysis.findings]
    assert "index" not in kinds and not any(r.problems for r in report.analysis.results), report.diagnosis
    echo = next(f for f in report.analysis.findings if f.kind == "echo")
    assert "3 of 65 documents: stripped of leading and trailing whitespace (3)" in echo.evidence, echo.evidence


def test_transformers_tokenizer_as_the_hub_files_load_it(spread_model, hub_tokenizer, verifier, serve):
    """transformers >= 5 rebuilds XLMRobertaTokenizer's pipeline (named exactly); transformers 4 runs
    tokenizer.json (agrees)."""
    url = serve(TorchPeer(hub_tokenizer, spread_model[1]), "tei")
    report = verify_endpoint(url, format="tei", atol=ATOL, verifier=verifier)
    table_row("transformers peer over HTTP (tei)", "AutoTokenizer on the hub's tokenizer files", report)
    if transformers_major() < 5:
        assert report.agrees, str(report)
        return
    assert not report.agrees
    assert report.diagnosis[0].startswith("diagnosis: the tokenizer is transformers >= 5's XLMRobertaTokenizer, which")
    assert "reproduces every answer within the tolerance" in report.diagnosis[0]
    differing = [r.probe.id for r in report.analysis.results if not r.ok]
    assert differing == ["invisible", "rtl", "empty"], differing


def test_transformers_tokenizer_one_pair_at_a_time(spread_model, hub_tokenizer, verifier):
    """The text-classification pipeline's way: tokenizer(q, d) per pair, where transformers 5 encodes
    an empty document as the single sequence <s> q </s>."""
    torch = require("torch")
    model = spread_model[1]

    def one_at_a_time(query, documents):
        with torch.no_grad():
            return [model(**hub_tokenizer(query, d, return_tensors="pt")).logits[0, 0].item() for d in documents]

    report = verifier.check(one_at_a_time, atol=ATOL)
    table_row("transformers, one pair per call", "AutoTokenizer on the hub's tokenizer files", report)
    if transformers_major() < 5:
        assert report.agrees, str(report)
        return
    assert 'tokenizer(q, "") encodes an empty document as the single sequence <s> q </s>' in report.diagnosis[0]
    assert "reproduces every answer within the tolerance" in report.diagnosis[0], report.diagnosis


@pytest.fixture(scope="module")
def long_model(torch, tmp_path_factory):
    """A tiny random model with bge-reranker-v2-m3's position table (8194 slots: 8192 tokens), attention
    through SDPA so that transformers never holds an [8192, 8192] score matrix."""
    directory = tmp_path_factory.mktemp("verify-long-model")
    model = build_model(
        directory, seed=2, init_std=0.2, head_scale=10.0, vocab_size=SMALL_VOCAB, max_position_embeddings=8194
    )
    model.config._attn_implementation = "sdpa"
    shutil.copy(SMALL_TOKENIZER, directory / "tokenizer.json")
    return directory, model


@pytest.fixture(scope="module")
def long_verifier(long_model):
    reranker = Reranker.from_pretrained(long_model[0])
    assert reranker.max_length == 8192
    return Verifier(reranker, model_name="tiny-8k")


@pytest.mark.parametrize("fault", [None, "truncate-512", "truncate-4096"])
def test_long_context_model_probed_up_to_its_limit(fault, long_model, hf_tokenizer, long_verifier, serve):
    """The probes go to 8000 document tokens on a model that takes 8192; an engine that cuts at 512 (or
    4096) is named, with the lengths where it starts to differ."""
    probe = next(p for p in long_verifier.probes if p.id == "long-context")
    assert probe.tokens == (1000, 4000, 8000)
    url = serve(TorchPeer(hf_tokenizer, long_model[1], fault=fault, max_length=8192), "tei")
    report = verify_endpoint(url, format="tei", atol=ATOL, verifier=long_verifier)
    lines = report.diagnosis
    table_row("transformers peer over HTTP (tei), 8,192-token model", f"planted: {fault or 'none'}", report)
    max_logit_diff, mean_logit_diff = report.analysis.overall("logit_diff")
    if fault is None:
        assert report.agrees, str(report)
        assert max_logit_diff <= ATOL, f"max |diff| {max_logit_diff:.3e}, mean {mean_logit_diff:.3e} on logits"
        return
    length = fault.removeprefix("truncate-")
    assert not report.agrees
    assert f"pairs are truncated to {length} tokens although the model takes 8192 (longest_first)" in lines[0], lines
    assert "reproduces every answer within the tolerance" in lines[0], lines[0]
    point = next(line for line in lines if "truncation point" in line)
    assert {
        "512": "probe lengths, documents of 200 tokens agrees, 300 tokens agrees, 510 tokens differs, 520 tokens "
        "differs, 2000 tokens differs; probe long-query, documents of 300 tokens differs, 600 tokens differs; probe "
        "long-context, documents of 1000 tokens differs, 4000 tokens differs, 8000 tokens differs",
        "4096": "probe long-context, documents of 1000 tokens agrees, 4000 tokens agrees, 8000 tokens differs",
    }[length] in point, point


@pytest.fixture(scope="module")
def onnx_dir(spread_model, tmp_path_factory):
    """The test model with an ONNX export beside it (onnx/model.onnx), as bench exports it."""
    require("onnxruntime", "verify against onnxruntime")
    from bench.models import export_onnx

    model_dir = tmp_path_factory.mktemp("with-onnx")
    shutil.copytree(spread_model[0], model_dir, dirs_exist_ok=True)
    export_onnx(model_dir)
    return model_dir


def onnx_scorer(model_dir, model_file: str):
    """docs/verify.md's onnxruntime example: tokenizers + an InferenceSession on an ONNX file."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(512)
    tokenizer.enable_padding(pad_id=1)
    session = ort.InferenceSession(str(model_dir / model_file), providers=["CPUExecutionProvider"])

    def onnx_scores(query, documents):
        batch = tokenizer.encode_batch([(query, d) for d in documents])
        ids = np.array([e.ids for e in batch], dtype=np.int64)
        mask = np.array([e.attention_mask for e in batch], dtype=np.int64)
        return session.run(None, {"input_ids": ids, "attention_mask": mask})[0][:, 0]

    return onnx_scores


def test_onnxruntime_session_as_in_the_docs(onnx_dir, verifier):
    """docs/verify.md's onnxruntime example, run on an ONNX export of the test model."""
    report = verifier.check(onnx_scorer(onnx_dir, "onnx/model.onnx"), source="onnxruntime", atol=ATOL)
    table_row("onnxruntime session (docs/verify.md's example)", "float32 export", report)
    max_logit_diff, mean_logit_diff = report.analysis.overall("logit_diff")
    assert report.agrees, str(report)
    assert max_logit_diff <= ATOL, f"max |diff| {max_logit_diff:.3e}, mean {mean_logit_diff:.3e} on logits"


@pytest.mark.parametrize("per_channel, reduce_range", [(False, False), (True, False), (False, True)])
def test_onnxruntime_dynamic_int8_is_named(per_channel, reduce_range, onnx_dir, verifier):
    """onnxruntime's quantize_dynamic (what optimum's ORTQuantizer drives) in its three weight schemes."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    name = f"onnx/int8-{per_channel}-{reduce_range}.onnx"
    quantize_dynamic(
        str(onnx_dir / "onnx/model.onnx"),
        str(onnx_dir / name),
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        reduce_range=reduce_range,
    )
    report = verifier.check(onnx_scorer(onnx_dir, name), source="onnxruntime int8", atol=ATOL)
    table_row(
        "onnxruntime session", f"quantize_dynamic QInt8, per_channel={per_channel}, reduce_range={reduce_range}", report
    )
    assert not report.agrees
    assert "as onnxruntime's quantize_dynamic does" in report.diagnosis[0], report.diagnosis
    best = report.analysis.hypotheses[0]
    flavour = "per output channel" if per_channel else "7-bit weights" if reduce_range else "per tensor"
    assert best.key == "int8-dynamic-onnx" and best.flavour == flavour and best.fits, best
    # the emulation is onnxruntime's scheme: every pair within the tolerance but those of one probe, where
    # attention's float noise put one input of an int8 layer on the other side of a rounding step
    emulated = verifier.local.flavours(best.key)[list(FLAVOURS[best.key]).index(flavour)]
    onnx_logits = np.concatenate([r.endpoint for r in report.analysis.results])
    off = np.abs(onnx_logits - emulated) > ATOL
    probes_off = {
        r.probe.id
        for r, s in zip(
            report.analysis.results, np.split(off, np.cumsum([len(r.endpoint) for r in report.analysis.results])[:-1])
        )
        if s.any()
    }
    assert len(probes_off) <= 1, f"pairs beyond {ATOL}: {off.sum()}, in probes {sorted(probes_off)}"


# --- peer libraries as users run them ---------------------------------------------------------------------

TOKENIZER5 = "the tokenizer is transformers >= 5's XLMRobertaTokenizer, which rebuilds the pipeline"
# setting -> what the first diagnosis line names besides the tokenizer (transformers >= 5), or alone (4)
COMPUTE = {
    "float32": None,
    "float16": "the model computes in float16",
    "bfloat16": "the model computes in bfloat16",
    "int8-dynamic": "dynamically quantised to int8 as torch's quantize_dynamic does",
}


def assert_named(report, setting: str) -> None:
    """A library on the hub's files: under transformers >= 5 its tokenizer, and its compute setting if
    reduced, named in the first line (two faults together); under transformers 4 the setting alone."""
    first = report.diagnosis[0] if report.diagnosis else ""
    compute = COMPUTE[setting]
    if transformers_major() < 5 and compute is None:
        assert report.agrees, str(report)
        return
    assert not report.agrees, str(report)
    if transformers_major() >= 5:
        assert TOKENIZER5 in first, report.diagnosis
        assert (compute is None) == ("two faults together" not in first), first
    if compute is not None:
        assert compute in first, report.diagnosis
    assert "reproduces every answer" in first or "the rest is the order of roundings" in first, first


@pytest.mark.parametrize("setting", list(COMPUTE))
def test_sentence_transformers_cross_encoder(setting, hub_dir, verifier):
    """sentence-transformers' CrossEncoder on the hub's files, in float32, float16, bfloat16 and with its
    linear layers dynamically quantised to int8."""
    torch = require("torch")
    st = require("sentence_transformers", "verify against sentence-transformers")
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(setting, torch.float32)
    model = st.CrossEncoder(str(hub_dir), device="cpu", model_kwargs={"dtype": dtype})
    if setting == "int8-dynamic":  # in place: the CrossEncoder is itself a torch module holding the model
        torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)

    def cross_encoder(query, documents):
        return model.predict([(query, d) for d in documents], batch_size=64)

    report = verifier.check(cross_encoder, source=f"sentence-transformers {st.__version__} CrossEncoder", atol=ATOL)
    table_row(f"sentence-transformers {st.__version__} CrossEncoder", setting, report)
    assert report.analysis.scale.name == "sigmoid", report.analysis.scale
    assert_named(report, setting)


def test_rerankers_cross_encoder(hub_dir, verifier):
    """The rerankers library's transformers cross-encoder on the hub's files (float32 on CPU)."""
    torch = require("torch")
    rerankers = require("rerankers", "verify against the rerankers library")
    ranker = rerankers.Reranker(str(hub_dir), model_type="cross-encoder", dtype=torch.float32, verbose=0)

    def rerankers_scores(query, documents):
        results = ranker.rank(query, documents, doc_ids=list(range(len(documents)))).results
        by_id = {r.document.doc_id: r.score for r in results}
        return [by_id[i] for i in range(len(documents))]

    report = verifier.check(rerankers_scores, source="rerankers cross-encoder", atol=ATOL)
    version = getattr(rerankers, "__version__", "")
    table_row(f"rerankers {version} cross-encoder".replace("  ", " "), "float32", report)
    assert report.analysis.scale.name == "logits", report.analysis.scale
    assert_named(report, "float32")


def test_text_classification_pipeline(hub_dir, verifier):
    """transformers' text-classification pipeline on the hub's files, as a user scores pairs with it: one
    {"text", "text_pair"} per pair, truncation on, the raw logit (function_to_apply="none"). It tokenizes one
    pair per call, so under transformers >= 5 tokenizer(q, "") drops an empty document."""
    transformers = require("transformers")
    classify = transformers.pipeline("text-classification", model=str(hub_dir), device="cpu")

    def pipeline_scores(query, documents):
        pairs = [{"text": query, "text_pair": d} for d in documents]
        return [a["score"] for a in classify(pairs, function_to_apply="none", truncation=True)]

    report = verifier.check(pipeline_scores, source="transformers text-classification pipeline", atol=ATOL)
    table_row(f"transformers {transformers.__version__} text-classification pipeline", "float32", report)
    assert report.analysis.scale.name == "logits", report.analysis.scale
    if transformers_major() < 5:
        assert report.agrees, str(report)
        return
    assert not report.agrees, str(report)
    first = report.diagnosis[0]
    assert 'tokenizer(q, "") encodes an empty document as the single sequence <s> q </s>' in first, report.diagnosis
    assert "reproduces every answer within the tolerance" in first, report.diagnosis


def test_flagembedding_reranker(hub_dir, verifier):
    """FlagEmbedding's FlagReranker on the hub's files, float32 on CPU, its defaults (max_length 512, the
    query cut at 3/4 of it, only_second truncation). Under transformers >= 5 it decodes each text's ids back
    to text and tokenizes the pair again, which moves a text whose pieces do not spell it back (an <unk> inside
    a word, emoji joined by zero-width joiners)."""
    flag = require("FlagEmbedding", "verify against FlagEmbedding")
    ranker = flag.FlagReranker(str(hub_dir), use_fp16=False, devices="cpu")

    def flag_scores(query, documents):
        return np.atleast_1d(ranker.compute_score([[query, d] for d in documents])).tolist()

    report = verifier.check(flag_scores, source="FlagEmbedding FlagReranker", atol=ATOL)
    table_row(f"FlagEmbedding {importlib.metadata.version('FlagEmbedding')} FlagReranker", "float32", report)
    assert report.analysis.scale.name == "logits", report.analysis.scale
    assert not report.agrees, str(report)  # only_second at 512 cuts the long-query probe's pairs
    first = report.diagnosis[0]
    expected = "FlagEmbedding's FlagReranker under transformers >= 5" if transformers_major() >= 5 else "only_second"
    assert expected in first, report.diagnosis
    assert "reproduces every answer within the tolerance" in first, report.diagnosis
