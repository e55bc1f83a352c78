"""Trusted (persisted) documents: a client may send a document's id instead of its text.

Ids are `sha256:<hex>` of the document's UTF-8 text, as GraphQL over HTTP's persisted
documents spell them in `documentId`; Apollo's automatic persisted queries send the bare hex
in `extensions.persistedQuery.sha256Hash`, and both are accepted. The trusted set is this
release's own documents (the operations of its examples and bench, `bank_graphql/api/
trusted/*.graphql`) plus a manifest of the operator's (`bank-graphql documents` writes one).

In the open mode (the default) any text is run too, and a text sent with its hash is
remembered for later requests by hash alone, within a budget of bytes. In the trusted-only
mode a text runs only if it is one of the trusted documents, and nothing is remembered.
"""

import hashlib
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from cachetools import LRUCache

from bank_graphql.api.codes import ErrorCode
from bank_graphql.api.errors import ApiError

REMEMBERED_BYTES_MAX = 8 * 1024 * 1024
_PREFIX = "sha256:"


def document_id(text: str) -> str:
    """The id of a document: the hash of its exact text."""
    return _PREFIX + hashlib.sha256(text.encode()).hexdigest()


def own_documents() -> dict[str, str]:
    """This release's own documents, by id."""
    folder = files("bank_graphql.api").joinpath("own_documents")
    texts = (f.read_text("utf-8") for f in folder.iterdir() if f.name.endswith(".graphql"))
    return {document_id(text): text for text in texts}


def manifest(texts: Iterable[str]) -> dict[str, str]:
    return {document_id(text): text for text in texts}


def load_manifest(path: Path) -> dict[str, str]:
    """A manifest file (a JSON object of id to text); refused if an id is not its text's."""
    loaded = json.loads(path.read_text("utf-8"))
    if not isinstance(loaded, dict) or not all(
        isinstance(text, str) and document_id(text) == _with_prefix(key)
        for key, text in loaded.items()
    ):
        raise ValueError(f"{path}: not a manifest of documents by their sha256 ids")
    return {_with_prefix(key): text for key, text in loaded.items()}


def _with_prefix(key: object) -> str:
    text = str(key)
    return text if text.startswith(_PREFIX) else _PREFIX + text


def _not_found() -> ApiError:
    return ApiError(ErrorCode.PERSISTED_QUERY_NOT_FOUND, "PersistedQueryNotFound")


@dataclass
class TrustedDocuments:
    documents: Mapping[str, str] = field(default_factory=own_documents)
    only: bool = False
    """Refuse every document not in `documents`."""
    _remembered: LRUCache[str, str] = field(
        default_factory=lambda: LRUCache(REMEMBERED_BYTES_MAX, getsizeof=sys.getsizeof)
    )

    def text(
        self, query: str | None, document: str | None, extensions: dict[str, Any] | None
    ) -> str | None:
        """The text a request runs: its `query`, or the document its id names. Raises an
        `ApiError` for an unknown id, a hash that is not the text's, or (trusted-only) a
        text not trusted. No text and no id: None, for the caller to refuse."""
        wanted = document if document is not None else _apq_hash(extensions)
        if wanted is None:
            if self.only and query:
                self._check_trusted(document_id(query))
            return query
        key = _with_prefix(wanted)
        if query:
            if document_id(query) != key:
                message = "the document's id is not the hash of its text"
                raise ApiError(ErrorCode.BAD_REQUEST, message)
            if self.only:
                self._check_trusted(key)
            elif sys.getsizeof(query) <= REMEMBERED_BYTES_MAX // 16:
                self._remembered[key] = query
            return query
        found = self.documents.get(key)
        if found is None and not self.only:
            found = self._remembered.get(key)
        if found is None:
            raise _not_found()
        return found

    def _check_trusted(self, key: str) -> None:
        if key not in self.documents:
            message = "this server runs only its trusted documents: send one's documentId"
            raise ApiError(ErrorCode.DOCUMENT_NOT_TRUSTED, message)


def _apq_hash(extensions: dict[str, Any] | None) -> str | None:
    persisted = (extensions or {}).get("persistedQuery")
    sha = persisted.get("sha256Hash") if isinstance(persisted, dict) else None
    return sha if isinstance(sha, str) else None
