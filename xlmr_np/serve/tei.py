"""POST /rerank as text-embeddings-inference takes it: request -> EncodeOptions -> scores -> [TeiRank].

A pair longer than the model's max_length is a 413 unless the request says `truncate: true` (or the server
runs with --auto-truncate and the request says nothing); `truncation_direction: "Left"` keeps the document's
end (and the query whole). --windows does not apply here, as TEI has no windows. A new per-request option
touches schema.TeiRequest and `options` below.
"""

from __future__ import annotations

import asyncio

from fastapi import Request

from ..api import TeiRank, tei_ranks
from ..tokenizer import EncodeOptions, TooManyTokens
from . import schema
from .admission import Scored, Service, Ticket, read_json, score
from .cohere import check_count
from .errors import ApiError

COUNT_LIMIT = 65_536  # an over-long pair's tokens are counted up to this many ("more than" beyond): ~50 ms


def options(service: Service, body: schema.TeiRequest) -> EncodeOptions:
    return service.reranker.call_options(direction=body.truncation_direction.lower())


def truncates(service: Service, body: schema.TeiRequest) -> bool:
    return service.settings.auto_truncate if body.truncate is None else body.truncate


def pair_length(service: Service, query: str, text: str) -> str:
    """The tokens of the whole (query, text) pair, special tokens included, for TEI's "Given: n": counted as
    windows without overlap (less the template and query each repeats), at a cost bounded by COUNT_LIMIT
    tokens; "more than n" beyond."""
    reranker = service.reranker
    whole = reranker.call_options(windows=True, window_overlap=0)
    overhead = len(reranker.tokenizer.sequences([(query, "")], whole)[0][0].ids)  # <s> query </s></s> </s>
    try:
        windows, _ = reranker.tokenizer.sequences([(query, text)], whole, max_tokens=COUNT_LIMIT)
    except TooManyTokens:
        return f"more than {COUNT_LIMIT}"
    return str(overhead + sum(len(w.ids) - overhead for w in windows))


async def rerank(service: Service, request: Request, ticket: Ticket) -> tuple[list[TeiRank], Scored]:
    ticket.enter()
    body = schema.validate(schema.TeiRequest, await read_json(request, service, ticket))
    check_count(service, len(body.texts), "texts")

    async def refuse_long(encoded, owners):
        if truncates(service, body):
            return
        cut = [owner for owner, e in zip(owners, encoded) if e.truncated]
        if cut:
            loop = asyncio.get_running_loop()
            given = await loop.run_in_executor(service.tokenizing, pair_length, service, body.query, body.texts[cut[0]])
            raise ApiError(
                413,
                f"Input validation error: `inputs` must have less than {service.reranker.max_length} tokens. "
                f'Given: {given} (texts[{cut[0]}]); send "truncate": true to cut it',
                f"texts[{cut[0]}]",
            )

    scored = await score(
        service, request, ticket, body.query, body.texts, options(service, body), body.raw_scores, refuse_long
    )
    return tei_ranks(scored.scores, body.texts, body.return_text), scored
