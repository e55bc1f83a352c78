"""The media type of an answer, chosen by the request's `Accept` header (GraphQL over HTTP).

`application/graphql-response+json` promises that a status outside 2xx comes from the
server itself, so it carries the request's outcome: a request that never ran (it did not
parse, validate or coerce its variables) is a 4xx without a `data` entry. With
`application/json` every GraphQL answer is a 200, as legacy clients expect; it stays the
answer to `*/*`, to no `Accept` at all, and to an `Accept` naming neither type.
"""

from dataclasses import dataclass
from functools import lru_cache

from starlette.datastructures import Headers

JSON = "application/json"
GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
_SUPPORTED = (JSON, GRAPHQL_RESPONSE_JSON)
"""On a tie, the first wins: the legacy type, for a client that states no preference."""
_ACCEPT_RANGES_MAX = 64
"""Media ranges read from one `Accept`: no real client lists more."""


def content_type(media_type: str) -> str:
    """The `Content-Type` of an answer in `media_type`: graphql-response+json names its
    encoding, as the specification asks; JSON is UTF-8 by definition and stays as it was."""
    return f"{media_type}; charset=utf-8" if media_type == GRAPHQL_RESPONSE_JSON else media_type


@dataclass(frozen=True, slots=True)
class _Range:
    type: str
    subtype: str
    quality: float
    position: int

    def specificity(self, media_type: str) -> int:
        """How closely this range names `media_type`: 2 exactly, 1 by `type/*`, 0 by `*/*`,
        -1 not at all."""
        type_, subtype = media_type.split("/")
        if self.type == type_ and self.subtype == subtype:
            return 2
        if self.type == type_ and self.subtype == "*":
            return 1
        return 0 if self.type == self.subtype == "*" else -1


def response_media_type(headers: Headers) -> str:
    """The supported type the client ranks highest: by quality, then by how exactly it names
    it, then by the order it lists them in; `JSON` when it accepts neither."""
    return _media_type_for(",".join(headers.getlist("accept")))


# A client sends the same Accept on every request: its answer is kept (the headers' own
# bound, BANK_HEADER_BYTES_MAX, bounds each entry).
@lru_cache(maxsize=256)
def _media_type_for(accept: str) -> str:
    parts = accept.split(",", _ACCEPT_RANGES_MAX)
    parsed = (_parse_range(part, i) for i, part in enumerate(parts[:_ACCEPT_RANGES_MAX]))
    ranges = [r for r in parsed if r is not None]
    best, best_rank = JSON, (0.0, -1, 0)
    for media_type in _SUPPORTED:
        matching = [(r.specificity(media_type), -r.position, r) for r in ranges]
        specificity, _, chosen = max(matching, default=(-1, 0, None), key=lambda m: m[:2])
        if chosen is None or specificity < 0:
            continue
        # The most specific range decides (RFC 9110): `*/*, application/json;q=0` refuses JSON.
        rank = (chosen.quality, specificity, -chosen.position)
        if chosen.quality > 0 and rank > best_rank:
            best, best_rank = media_type, rank
    return best


def _parse_range(text: str, position: int) -> _Range | None:
    """`type/subtype;param=value;q=0.5`; None when it names no type. A `q` that is not a
    number from 0 to 1 counts as 1."""
    media_range, *params = text.split(";")
    type_, _, subtype = media_range.strip().lower().partition("/")
    if not type_ or not subtype:
        return None
    quality = 1.0
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(value.strip().strip('"'))
            except ValueError:
                quality = 1.0
    return _Range(type_, subtype, quality if 0 <= quality <= 1 else 1.0, position)
