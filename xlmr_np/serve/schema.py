"""The request schema, written once: these pydantic models validate requests and generate /openapi.json.

Requests are parsed strictly (no "2" for 2, no 1 for true); fields a model does not name are ignored, so
clients that send provider-specific options still work. `null` means "not given" for every optional
field. What a request's options mean is each wire format's adapter's business (cohere.py, tei.py: request
-> EncodeOptions). Responses are the typed classes of xlmr_np.api; `response_schema` derives their
OpenAPI schema from those same classes.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from ..errors import InputError
from ..ranking import check_query
from .errors import ApiError

STRICT = ConfigDict(strict=True, extra="ignore")


def _text(value: str) -> str:
    """Refuse strings that are not Unicode text: JSON's "\\ud800" escape gives a lone surrogate, which no
    tokenizer (and no UTF-8 response) can carry."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"contains a lone surrogate ({value[e.start]!r} at character {e.start}), which is not text"
        ) from None
    return value


def _non_blank(value: str) -> str:
    """The query rule the CLI and the Python API apply too (ranking.check_query)."""
    try:
        check_query(value)
    except InputError as e:  # the field's name comes in front: "query must be a non-empty string, ..."
        raise ValueError(e.what.removeprefix("the query ").removeprefix("query ")) from None
    return _text(value)


Text = Annotated[str, AfterValidator(_text)]


class CohereRequest(BaseModel):
    """POST /v1/rerank (Cohere v1, Jina) and POST /v2/rerank (Cohere v2)."""

    model_config = STRICT

    model: str | None = Field(None, description="the served model name (GET /v1/models); another name is a 404")
    query: str = Field(description="the search query")
    documents: list[Text | dict[str, Any]] = Field(
        min_length=1,
        description='strings, or objects: {"text": ...}, or any object whose rank_fields are scored (Cohere '
        "v1 structured documents); at most max_client_batch_size (GET /info) per request",
    )
    top_n: int | None = Field(None, ge=1, description="return the best n (default: all)")
    return_documents: bool | None = Field(
        None, description="echo each document (an object whole) in its result (default: true on /v1, false on /v2)"
    )
    rank_fields: list[str] | None = Field(
        None,
        min_length=1,
        description='the fields of object documents to score (default ["text"]); one field '
        'is scored as its text, several as "name: value" lines in this order',
    )
    max_chunks_per_doc: int | None = Field(
        None,
        ge=1,
        description="1: truncate long documents; n > 1: score a document by the best of its first n "
        "overlapping windows (default: the server's --windows setting, unlimited)",
    )
    max_tokens_per_doc: int | None = Field(
        None, ge=1, description="cut each document to this many tokens first (Cohere v2); the query is kept whole"
    )
    raw_scores: bool | None = Field(None, description="relevance_score as the raw logit instead of its sigmoid")

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        return _non_blank(value)


class TeiRequest(BaseModel):
    """POST /rerank, as text-embeddings-inference takes it."""

    model_config = STRICT

    query: str = Field(description="the search query")
    texts: list[Text] = Field(min_length=1, description="the documents; at most max_client_batch_size (GET /info)")
    raw_scores: bool = Field(False, description="the raw logit instead of its sigmoid")
    return_text: bool = Field(False, description="echo each text in its result")
    truncate: bool | None = Field(
        None,
        description="cut pairs longer than max_input_length (GET /info); false: such a pair is a 413 "
        "(default: the server's auto_truncate, GET /info)",
    )
    truncation_direction: Literal["Right", "Left", "right", "left"] = Field(
        "Right",
        description="Right: cut the end (of the longer text first); Left: keep the document's end "
        "(and the query whole)",
    )

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        return _non_blank(value)


# ---------------------------------------------------------------------------------------------- responses


def response_schema(response_type, ref_template: str = "#/components/schemas/{model}") -> dict:
    """The JSON schema of one of xlmr_np.api's response types (a dataclass, or a list of them), with its
    nested types under "$defs"."""
    return TypeAdapter(response_type).json_schema(ref_template=ref_template)


def parse_response(response_type, value):
    """A parsed JSON answer as one of xlmr_np.api's response types, or pydantic's ValidationError if it does
    not fit the schema (missing fields, wrong types): what a typed client would do with it."""
    return TypeAdapter(response_type).validate_python(value)


# ---------------------------------------------------------------------------------------------- validation


def json_type(value) -> str:
    """The JSON name of a parsed value's type, for messages ("got number")."""
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _is_union_tag(part) -> bool:
    """pydantic names the member of a union in an error's location: "str", "dict[str,any]",
    "function-after[_text(), str]"; JSON field names here are plain identifiers."""
    return isinstance(part, str) and (part == "str" or not part.isidentifier())


def field_path(location) -> str:
    """pydantic's error location -> the JSON path clients see: ("documents", 1, "text") -> documents[1].text.
    Union member tags are dropped."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _is_union_tag(part):
            continue
        else:
            path += f".{part}" if path else part
    return path


_WANTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "bool_type": "a boolean",
    "list_type": "an array",
    "dict_type": "an object",
    "literal_error": "one of the listed values",
}


Body = TypeVar("Body", bound=BaseModel)


def validate(model: type[Body], body) -> Body:
    """A parsed JSON body -> the request model, or ApiError(400) naming the first offending field."""
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {json_type(body)}", "body")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        first: dict = dict(errors[0])
        if _is_union_tag(first["loc"][-1]) and first["type"] in _WANTED:  # neither a string nor an object
            first = dict(first, type="document_type")
        raise ApiError(400, _message(field_path(first["loc"]), first), field_path(first["loc"])) from None


def _message(field: str, error: dict) -> str:
    kind, value = error["type"], error.get("input")
    if kind == "missing":
        return f"{field} is required"
    shown = f"{json_type(value)} {json.dumps(value, ensure_ascii=False)[:40]}" if kind != "value_error" else ""
    if kind == "document_type":
        return f'{field} must be a string or an object such as {{"text": string}}, got {shown}'
    if kind == "too_short":
        return f"{field} is empty: give at least one {'document' if field in ('documents', 'texts') else 'item'}"
    if kind == "value_error":
        return f"{field} {error['msg'].removeprefix('Value error, ')}"
    if kind in ("greater_than_equal", "less_than_equal"):
        bound = error["ctx"].get("ge", error["ctx"].get("le"))
        return f"{field} must be {'at least' if 'ge' in error['ctx'] else 'at most'} {bound}, got {shown}"
    if kind in _WANTED:
        return f"{field} must be {_WANTED[kind]}, got {shown}"
    return f"{field}: {error['msg'].lower()}, got {shown}"
