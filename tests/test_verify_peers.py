"""verify against independent peers run in this process: TEI- and Cohere-format rerank endpoints backed by
transformers + torch on the same random model, clean and with planted faults.

Each planted fault is one a real engine has shipped (or could): verify must flag it (verdict "differs")
and name it in a diagnosis line. Peers compute in float32 like the reference, so a clean peer agrees
within 1e-4 on logits.
"""

from __future__ import annotations

import copy
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from helpers import SMALL_TOKENIZER, SMALL_VOCAB

from xlmr_np import Reranker
from xlmr_np.testing import build_model
from xlmr_np.verify import Verifier, verify_endpoint

pytestmark = pytest.mark.parity

ATOL = 1e-4
FAULTS = ("separator", "gelu-head", "truncate-256", "only_second", "float16", "sigmoid", "shuffled")


class TorchPeer:
    """A cross-encoder scored with transformers, with at most one fault planted."""

    def __init__(self, tokenizer, model, fault=None):
        import torch

        self.torch = torch
        self.tokenizer = tokenizer  # transformers' XLMRobertaTokenizerFast, shared: each copy holds ~300 MB
        self.model = copy.deepcopy(model).half().float() if fault == "float16" else model
        self.fault = fault

    def logits(self, query: str, documents: list[str]) -> list[float]:
        torch = self.torch
        batch = self.tokenizer(
            [query] * len(documents),
            documents,
            padding=True,
            return_tensors="pt",
            truncation="only_second" if self.fault == "only_second" else "longest_first",
            max_length=256 if self.fault == "truncate-256" else 512,
        )
        if self.fault == "separator":  # <s> q </s><s> d </s>: the second </s> of each row becomes <s>
            for row in batch["input_ids"]:
                first = int((row == self.tokenizer.eos_token_id).nonzero()[0])
                row[first + 1] = self.tokenizer.bos_token_id
        with torch.no_grad():
            if self.fault == "gelu-head":
                hidden = self.model.roberta(**batch).last_hidden_state[:, 0]  # [B, D]
                head = self.model.classifier
                logits = head.out_proj(torch.nn.functional.gelu(head.dense(hidden)))
            else:
                logits = self.model(**batch).logits
        return logits[:, 0].tolist()

    def ranked(self, query: str, documents: list[str], sigmoid: bool) -> list[dict]:
        """Results best first; the "shuffled" fault sorts the documents by length for batching and reports
        positions in that order as indices."""
        order = list(range(len(documents)))
        if self.fault == "shuffled":
            order.sort(key=lambda i: -len(documents[i]))
        logits = self.logits(query, [documents[i] for i in order])
        scores = self.torch.sigmoid(self.torch.tensor(logits)).tolist() if sigmoid else logits
        results = [
            {"index": pos if self.fault == "shuffled" else i, "score": s, "text": documents[i]}
            for pos, (i, s) in enumerate(zip(order, scores))
        ]
        return sorted(results, key=lambda r: -r["score"])


def handler_for(peer: TorchPeer, format: str):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            # TEI: raw_scores asks for logits (the sigmoid fault ignores it); Cohere: sigmoid relevance scores
            if self.path == "/rerank" and format == "tei":
                raw = body.get("raw_scores", False) and peer.fault != "sigmoid"
                answer = [
                    {"index": r["index"], "score": r["score"], "text": r["text"]}
                    for r in peer.ranked(body["query"], body["texts"], sigmoid=not raw)
                ]
            elif self.path == "/v1/rerank" and format == "cohere":
                answer = {
                    "results": [
                        {"index": r["index"], "relevance_score": r["score"], "document": {"text": r["text"]}}
                        for r in peer.ranked(body["query"], body["documents"], sigmoid=True)
                    ]
                }
            else:
                self.send_error(404)
                return
            payload = json.dumps(answer).encode()
            self.send_response(200)
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


@pytest.mark.parametrize("format", ["tei", "cohere"])
def test_clean_peer_agrees_within_1e4(format, spread_model, hf_tokenizer, verifier, serve):
    url = serve(TorchPeer(hf_tokenizer, spread_model[1]), format)
    report = verify_endpoint(url, format="auto", atol=ATOL, verifier=verifier)
    max_logit_diff, mean_logit_diff = report.analysis.overall("logit_diff")
    assert report.agrees, str(report)
    assert max_logit_diff <= ATOL, f"max |diff| {max_logit_diff:.3e}, mean {mean_logit_diff:.3e} on logits"
    assert report.analysis.scale.name == ("logits" if format == "tei" else "sigmoid")
    assert f"({format} format)" in report.source
    assert all(r.answered for r in report.analysis.results), [r.error for r in report.analysis.results]


# fault -> what the diagnosis must name
NAMED = {
    "separator": "joins query and document with </s><s> instead of </s></s>",
    "gelu-head": "applies GELU where the model has tanh",
    "truncate-256": "truncated to 256 tokens (longest_first)",
    "only_second": "only the document is cut (only_second truncation at 512 tokens)",
    "float16": "weights are rounded to float16",
    "sigmoid": "the scores are sigmoid(logit) in (0, 1), not raw logits",
    "shuffled": "results are attached to the wrong documents",
}


@pytest.mark.parametrize(
    "format, fault", [("tei", f) for f in FAULTS] + [("cohere", f) for f in ("separator", "only_second", "shuffled")]
)
def test_planted_fault_is_flagged_and_named(format, fault, spread_model, hf_tokenizer, verifier, serve):
    url = serve(TorchPeer(hf_tokenizer, spread_model[1], fault=fault), format)
    report = verify_endpoint(url, format=format, atol=ATOL, verifier=verifier)
    lines = report.diagnosis
    print(f"{format} {fault}:", *lines, sep="\n  ")
    assert not report.agrees and report.exit_code == 1, str(report)
    assert NAMED[fault] in lines[0], f"first diagnosis line for {fault}: {lines}"
    if fault not in ("sigmoid", "shuffled"):  # value faults: the planted variant reproduces the answers exactly
        assert "reproduces every answer within the tolerance" in lines[0], lines[0]
        best = report.analysis.hypotheses[0]
        assert best.max <= ATOL, f"{fault}: closest variant {best.key} still differs by {best.max:.3e}"


def test_onnxruntime_session_as_in_the_docs(spread_model, verifier, tmp_path):
    """docs/verify.md's onnxruntime example, run on an ONNX export of the test model."""
    ort = pytest.importorskip("onnxruntime")
    from tokenizers import Tokenizer

    from bench.models import export_onnx

    model_dir = tmp_path / "with-onnx"
    shutil.copytree(spread_model[0], model_dir)
    export_onnx(model_dir)

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(512)
    tokenizer.enable_padding(pad_id=1)
    session = ort.InferenceSession(str(model_dir / "onnx/model.onnx"), providers=["CPUExecutionProvider"])

    def onnx_scores(query, documents):
        batch = tokenizer.encode_batch([(query, d) for d in documents])
        ids = np.array([e.ids for e in batch], dtype=np.int64)
        mask = np.array([e.attention_mask for e in batch], dtype=np.int64)
        return session.run(None, {"input_ids": ids, "attention_mask": mask})[0][:, 0]

    report = verifier.check(onnx_scores, source="onnxruntime", atol=ATOL)
    max_logit_diff, mean_logit_diff = report.analysis.overall("logit_diff")
    assert report.agrees, str(report)
    assert max_logit_diff <= ATOL, f"max |diff| {max_logit_diff:.3e}, mean {mean_logit_diff:.3e} on logits"
