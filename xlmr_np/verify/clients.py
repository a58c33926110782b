"""HTTP clients for the rerank wire formats verify speaks, on the standard library's urllib.

urllib rather than httpx: verify sends one request at a time and needs nothing beyond a JSON POST with
a bearer token, so the core install (numpy, safetensors, tokenizers, huggingface-hub) is enough to run
it in any CI job.

Formats (request -> response):
- cohere / jina: POST {url}/v1/rerank {model?, query, documents, top_n, return_documents: true}
  -> {results: [{index, relevance_score, document: {text} | text}]}
- vllm: the same body at /v1/rerank; vLLM requires "model" (the served model name).
- tei (text-embeddings-inference): POST {url}/rerank {query, texts, raw_scores: true, return_text: true,
  truncate: true} -> [{index, score, text}]
A URL that already ends in /rerank is used as it is. `--format auto` finds the route from a base URL
(routes_to_try): /v1/rerank, /rerank with TEI's body, /v2/rerank, then /rerank with Cohere's (infinity serves
its Cohere-style rerank there).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from .analysis import Answer
from .probes import VerifyError

FORMATS = ("cohere", "jina", "tei", "vllm")


def _post(url: str, body: dict, api_key: str | None, timeout: float):
    """(status, parsed JSON or raw text). Connection failures raise VerifyError: nothing can be checked."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(
        url, data=json.dumps(body, ensure_ascii=False).encode("utf-8"), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise VerifyError(f"cannot reach {url} ({reason})") from None
    text = raw.decode("utf-8", errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def _error_message(status: int, body) -> str:
    if isinstance(body, dict):
        error = body.get("error", body.get("message", body.get("detail", body)))
        if isinstance(error, dict):
            error = error.get("message", error)
        return f"HTTP {status}: {str(error)[:200]}"
    return f"HTTP {status}: {' '.join(str(body).split())[:200]}"  # an HTML page on one line


def parse_results(items, n: int, score_field: str) -> Answer:
    """A list of {index, <score_field>, text | document} -> an Answer by claimed index."""
    if not isinstance(items, list):
        return Answer.failed(n, f"expected a list of results, got {type(items).__name__}")
    scores: list[float | None] = [None] * n
    texts: list[str | None] = [None] * n
    problems: list[str] = []
    for item in items:
        index, score = (item.get("index"), item.get(score_field)) if isinstance(item, dict) else (None, None)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
            problems.append(f"result index {index!r} is not an index into the {n} documents")
            continue
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            problems.append(f"result {index} has no numeric {score_field}")
            continue
        if scores[index] is not None:
            problems.append(f"index {index} appears more than once")
        scores[index] = float(score)
        text = item.get("text", item.get("document"))
        texts[index] = text.get("text") if isinstance(text, dict) else text
    missing = [i for i, s in enumerate(scores) if s is None]
    if missing:
        problems.append(f"no result for documents {missing[:10]}")
    return Answer(scores, texts if any(t is not None for t in texts) else None, problems)


class Endpoint:
    """A rerank endpoint as a function (query, documents) -> Answer."""

    def __init__(
        self, url: str, format: str, api_key: str | None = None, model: str | None = None, timeout: float = 300.0
    ):
        if format not in FORMATS:
            raise VerifyError(f"format must be one of {FORMATS} or auto, got {format!r}")
        if format == "vllm" and not model:
            raise VerifyError("the vllm format needs the served model name (--served-model-name)")
        self.format, self.api_key, self.model, self.timeout = format, api_key, model, timeout
        self.found = ""  # how --format auto found this route, when it tried others first
        self.url = (
            url
            if urllib.parse.urlsplit(url).path.rstrip("/").endswith("rerank")
            else (url.rstrip("/") + ("/rerank" if format == "tei" else "/v1/rerank"))
        )

    def __repr__(self) -> str:
        return f"{self.url} ({self.format} format{'; ' + self.found if self.found else ''})"

    def body(self, query: str, documents) -> dict:
        if self.format == "tei":
            return {"query": query, "texts": list(documents), "raw_scores": True, "return_text": True, "truncate": True}
        body = {"query": query, "documents": list(documents), "top_n": len(documents), "return_documents": True}
        if self.model:
            body["model"] = self.model
        return body

    def __call__(self, query: str, documents) -> Answer:
        status, body = _post(self.url, self.body(query, documents), self.api_key, self.timeout)
        if status in (401, 403):
            raise VerifyError(
                f"{self.url} refused the request ({_error_message(status, body)}); give the API key "
                f"in $XLMR_NP_API_KEY or with --api-key-env VARIABLE"
            )
        if status == 404:
            raw = json.dumps(body).lower()  # the model, not the route, was not found (as servers that name it say)
            if '"model_not_found"' in raw or '"field": "model"' in raw or '"param": "model"' in raw:
                raise VerifyError(
                    f"{self.url}: {_error_message(status, body)}; give the served model's name with --served-model-name"
                )
            raise VerifyError(
                f"{self.url}: no such route (HTTP 404); is this a {self.format}-format endpoint? try --format"
            )
        if status != 200:
            return Answer.failed(len(documents), _error_message(status, body))
        if self.format == "tei":
            return parse_results(body, len(documents), "score")
        if not isinstance(body, dict) or "results" not in body:
            return Answer.failed(len(documents), f"no 'results' in the response: {str(body)[:120]}")
        return parse_results(body["results"], len(documents), "relevance_score")


def routes_to_try(url: str) -> list[tuple[str, str]]:
    """The (format, full URL) pairs `--format auto` tries, in order: from a base URL, Cohere/Jina at
    /v1/rerank, TEI at /rerank, Cohere at /v2/rerank, then a Cohere-style body at /rerank (infinity's); a
    URL that names its route is tried with both bodies, the one its path suggests first."""
    path = urllib.parse.urlsplit(url).path.rstrip("/")
    if path.endswith(("/v1/rerank", "/v2/rerank")):
        return [("cohere", url), ("tei", url)]
    if path.endswith("/rerank"):
        return [("tei", url), ("cohere", url)]
    base = url.rstrip("/")
    return [
        ("cohere", base + "/v1/rerank"),
        ("tei", base + "/rerank"),
        ("cohere", base + "/v2/rerank"),
        ("cohere", base + "/rerank"),
    ]


def connect(
    url: str, format: str = "auto", api_key: str | None = None, model: str | None = None, timeout: float = 300.0
) -> Endpoint:
    """An Endpoint that has answered one short pair, so that an unreachable URL, a wrong key, a wrong
    model name or a wrong format fails at once (before the reference model is loaded).

    format "auto" tries routes_to_try(url) in turn; the first well-formed answer wins, and the Endpoint's
    `found` says which routes were tried before it.
    """
    if format != "auto":
        endpoint = Endpoint(url, format, api_key, model, timeout)
        answer = endpoint("capital of France", ["Paris.", "Bananas."])
        if answer.error or answer.problems:
            raise VerifyError(f"{endpoint}: a one-pair request failed ({answer.error or '; '.join(answer.problems)})")
        return endpoint
    tried = []
    for name, route in routes_to_try(url):
        try:
            endpoint = connect(route, name, api_key, model if name != "tei" else None, timeout)
        except VerifyError as e:
            if "refused" in str(e) or "--served-model-name" in str(e) or "cannot reach" in str(e):
                raise
            tried.append(f"{name} at {urllib.parse.urlsplit(route).path}: {_short(str(e))}")
            continue
        if tried:
            endpoint.found = f"found by --format auto after {'; '.join(tried)}"
        return endpoint
    raise VerifyError(f"{url} answers in none of the formats tried ({'; '.join(tried)}); give --format")


def _short(error: str) -> str:
    """A connect failure as the list of routes tried shows it."""
    if "(HTTP 404)" in error:
        return "HTTP 404"
    reason = error.split("a one-pair request failed (", 1)[-1].rstrip(")")
    return reason if len(reason) <= 80 else reason[:79] + "…"
