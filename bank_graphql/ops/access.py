"""`serve`'s access-control options: checked before anything starts, then handed to the
uvicorn workers in the environment; and the ADMIN key of a first start."""

import argparse
import asyncio
import ipaddress
import os
import sys

from bank_graphql.edge.jwt_tokens import JwtVerifier
from bank_graphql.edge.settings import JwtSettings, auth_from_env, jwt_from_env
from bank_graphql.ledger import create_first_admin_key, one_connection

_DEFAULTS = JwtSettings()


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name) or default


def add_access_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--no-auth",
        action="store_true",
        default=not auth_from_env(os.environ),
        help="turn access control off: every request is ADMIN as 'anonymous'; only with a "
        "loopback --host (env BANK_AUTH=off)",
    )
    options = [
        ("--jwt-secret", "SECRET", "HS256 secret of JWTs, 32 bytes or more; prefer the env", ""),
        ("--jwt-public-key", "FILE", "PEM public key of JWTs (RS256, ES256 or EdDSA)", ""),
        ("--jwt-issuer", "ISS", "the `iss` JWTs must carry", ""),
        ("--jwt-audience", "AUD", "the `aud` JWTs must carry", ""),
        ("--jwt-subject-claim", "NAME", "claim naming the subject", _DEFAULTS.subject_claim),
        ("--jwt-role-claim", "NAME", "claim holding the role", _DEFAULTS.role_claim),
        ("--jwt-accounts-claim", "NAME", "claim listing the accounts", _DEFAULTS.accounts_claim),
    ]
    for flag, metavar, text, default in options:
        variable = "BANK_" + flag[2:].upper().replace("-", "_")
        shown = f", default {default}" if default else ""
        serve.add_argument(
            flag,
            default=_env(variable, default),
            metavar=metavar,
            help=f"{text} (env {variable}{shown})",
        )


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def access_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment carrying the access options to the workers; ValueError (one
    sentence) when they cannot be used: `--no-auth` off loopback, a key file that cannot be
    read or is not a supported public key, a secret too short."""
    if args.no_auth:
        if not is_loopback(args.host):
            raise ValueError(
                f"--no-auth (BANK_AUTH=off) is only allowed on a loopback --host, not {args.host}"
            )
        return {"BANK_AUTH": "off"}
    env = {
        "BANK_AUTH": "on",
        "BANK_JWT_SECRET": args.jwt_secret,
        "BANK_JWT_PUBLIC_KEY": os.path.abspath(args.jwt_public_key) if args.jwt_public_key else "",
        "BANK_JWT_ISSUER": args.jwt_issuer,
        "BANK_JWT_AUDIENCE": args.jwt_audience,
        "BANK_JWT_SUBJECT_CLAIM": args.jwt_subject_claim,
        "BANK_JWT_ROLE_CLAIM": args.jwt_role_claim,
        "BANK_JWT_ACCOUNTS_CLAIM": args.jwt_accounts_claim,
    }
    JwtVerifier(jwt_from_env(env))
    return env


async def _first_admin_key(database_url: str) -> str | None:
    async with one_connection(database_url) as conn:
        return await create_first_admin_key(conn)


def create_admin_key_if_none(database_url: str) -> str | None:
    """With no API key yet, an ADMIN key, created now: the caller shows it, this once."""
    return asyncio.run(_first_admin_key(database_url))


ADMIN_KEY_CREATED = "No API key existed: created an ADMIN key. It is shown this once; keep it safe."


def print_admin_key(key: str) -> None:
    """The new ADMIN key on standard output, in plain text whatever the log format: where a
    server's output goes to a file or a pipe, its reader finds it there."""
    sys.stdout.write(f"{ADMIN_KEY_CREATED}\nadmin key: {key}\n")
    sys.stdout.flush()
