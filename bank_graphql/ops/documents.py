"""`bank-graphql documents`: the manifest of trusted documents, and `serve`'s options that
use one.

A frontend or script sends a document's id (`documentId: "sha256:..."`) instead of its
text; the server runs it straight from its cache. `documents FILE...` checks each file's
document against this release's schema and prints the manifest of them (this release's own
documents included), to pass to `serve --trusted-documents`.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from bank_graphql.api.schema import build_schema
from bank_graphql.api.trusted import load_manifest, manifest, own_documents
from bank_graphql.ops.database import refuse
from bank_graphql.ops.settings_env import env


def add_documents_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    documents = commands.add_parser(
        "documents",
        help="print the manifest of trusted documents (this release's own and FILEs'), "
        "for `serve --trusted-documents`",
    )
    documents.add_argument(
        "files", nargs="*", type=Path, metavar="FILE", help="a file holding one document"
    )
    documents.set_defaults(run=run_documents)


def add_trusted_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--trusted-documents",
        default=env("BANK_TRUSTED_DOCUMENTS", ""),
        metavar="FILE",
        help="a manifest (`bank-graphql documents` prints one) of documents clients may "
        "name by id, besides this release's own (env BANK_TRUSTED_DOCUMENTS)",
    )
    serve.add_argument(
        "--trusted-only",
        action="store_true",
        default=env("BANK_TRUSTED_ONLY", "0") == "1",
        help="run only trusted documents, sent by id or as their exact text "
        "(env BANK_TRUSTED_ONLY=1)",
    )


def trusted_env(args: argparse.Namespace) -> dict[str, str]:
    """The workers' environment for the trusted documents; ValueError if the manifest
    cannot be used."""
    path = args.trusted_documents
    if path:
        try:
            documents = load_manifest(Path(path))
        except (OSError, ValueError, RecursionError) as exc:
            raise ValueError(f"cannot read the trusted documents {path}: {exc}") from None
        schema = build_schema()
        for document_id, text in documents.items():
            problems = schema.document_errors(text)
            if problems:
                raise ValueError(f"{path}: {document_id}: {problems[0].message}")
    return {
        "BANK_TRUSTED_DOCUMENTS": os.path.abspath(path) if path else "",
        "BANK_TRUSTED_ONLY": "1" if args.trusted_only else "0",
    }


def run_documents(args: argparse.Namespace) -> None:
    schema = build_schema()
    texts = list(own_documents().values())
    for path in args.files:
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            refuse("documents", f"cannot read {path}: {exc}")
        problems = schema.document_errors(text)
        if problems:
            refuse("documents", f"{path}: {problems[0].message}")
        texts.append(text)
    sys.stdout.write(json.dumps(manifest(texts), indent=2, sort_keys=True) + "\n")
