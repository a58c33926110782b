"""Prometheus metrics of one server (its own registry, so several apps in one process do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# seconds: from a health check's fraction of a millisecond to a 1000-document request on a busy CPU
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TOKENS = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "xlmr_np_requests", "HTTP requests answered, by route and status", ["route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "xlmr_np_request_duration_seconds", "arrival to answer, by route", ["route"], buckets=SECONDS, registry=r
        )
        self.queue_seconds = Histogram(
            "xlmr_np_queue_duration_seconds", "a rerank request's wait for its first batch", buckets=SECONDS, registry=r
        )
        self.inference_seconds = Histogram(
            "xlmr_np_inference_duration_seconds",
            "a rerank request's first batch to its last",
            buckets=SECONDS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "xlmr_np_batch_duration_seconds", "one forward pass", buckets=SECONDS, registry=r
        )
        self.batch_tokens = Histogram(
            "xlmr_np_batch_tokens", "padded tokens of one forward pass", buckets=TOKENS, registry=r
        )
        self.queue_depth = Gauge("xlmr_np_queue_sequences", "sequences queued for the engine", registry=r)
        self.in_flight = Gauge(
            "xlmr_np_requests_in_flight", "rerank requests being read, tokenized, queued, scored or sent", registry=r
        )
        self.inflight_bytes = Gauge(
            "xlmr_np_inflight_bytes", "estimated memory of the rerank requests in flight (bodies, answers)", registry=r
        )
        self.inflight_tokens = Gauge("xlmr_np_inflight_tokens", "tokens of the rerank requests in flight", registry=r)
        self.documents = Counter("xlmr_np_documents", "documents scored", registry=r)
        self.tokens = Counter("xlmr_np_tokens", "tokens scored, special tokens included", registry=r)
        self.truncated = Counter("xlmr_np_truncated_documents", "documents scored with tokens left out", registry=r)
        self.abandoned = Counter(
            "xlmr_np_abandoned_requests",
            "rerank requests whose client left before the answer (their queued work dropped)",
            registry=r,
        )

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
