"""The server's settings, each default defined once: `xlmr-np serve` reads its options' defaults from here.

No web framework is imported, so the command line can describe the server on the core install.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ..tokenizer import DEFAULT_WINDOW_OVERLAP

SEQUENCES_PER_BATCH = 32  # the default batch budget: this many sequences of the model's own max_length
MIN_INFLIGHT_TOKENS = 1 << 20  # the default token budget is at least this (and 4 full batches)
MIB = 1 << 20


def default_max_batch_tokens(max_length: int) -> int:
    """Padded tokens per forward pass when --max-batch-tokens is not given: 32 sequences of the model's
    length limit (16,384 at 512, 262,144 at 8,192). The engine splits a batch into calls of at most 2,048
    tokens, so the budget groups work without growing the activations."""
    return SEQUENCES_PER_BATCH * max_length


def default_max_inflight_tokens(max_batch_tokens: int) -> int:
    """Tokens that may be in flight when --max-inflight-tokens is not given: 2**20 (about 40 MB of token
    ids), or 4 full batches if that is more."""
    return max(MIN_INFLIGHT_TOKENS, 4 * max_batch_tokens)


@dataclass(frozen=True)
class ServerSettings:
    model_name: str  # what clients send as "model" and what /v1/models and /info list
    api_key: str | None = None
    # one request
    max_documents: int = 1000  # documents (TEI: texts) per request; beyond: 413
    max_body_bytes: int = 8 * MIB  # request body; beyond: 413 before it is read
    # everything in flight (read, tokenized, queued, scored or being sent); see admission.py
    max_concurrent_requests: int = 512  # rerank requests; beyond: 429
    max_inflight_tokens: int | None = None  # tokens; beyond: 429, one request beyond: 413 (None: the default rule)
    max_inflight_bytes: int = 1024 * MIB  # estimated memory of bodies and answers; beyond: 429, alone: 413
    max_batch_tokens: int | None = None  # padded tokens per forward pass (None: 32 x the model's max_length)
    request_timeout: float = 60.0  # seconds from a request's first byte to its answer
    # long documents, unless a request says otherwise
    windows: bool = False  # score the best window instead of truncating
    window_overlap: int = DEFAULT_WINDOW_OVERLAP
    auto_truncate: bool = False  # TEI route: cut over-long pairs when a request does not say (else 413)
    # access
    private_health: bool = False  # /health, /info and /metrics need the key too
    cors_origins: tuple[str, ...] = ()  # browser origins allowed (CORS); none by default
    allowed_hosts: tuple[str, ...] = ()  # Host names accepted without a key, besides IPs and localhost
    model_revision: str | None = None
    # the connections (runner.py)
    max_connections: int = 1024  # open connections; more are answered 503 and closed
    keep_alive: float = 5.0  # seconds an idle keep-alive connection stays open
    graceful_timeout: float = 30.0  # on SIGTERM/SIGINT/SIGHUP: seconds to finish in-flight requests

    def for_model(self, max_length: int) -> ServerSettings:
        """These settings with the budgets left to the model (None) filled in by the rules above."""
        batch = self.max_batch_tokens or default_max_batch_tokens(max_length)
        return replace(
            self,
            max_batch_tokens=batch,
            max_inflight_tokens=self.max_inflight_tokens or default_max_inflight_tokens(batch),
        )


def default(name: str):
    """The default of one setting: default("max_documents") -> 1000."""
    (found,) = [f for f in fields(ServerSettings) if f.name == name]
    return found.default
