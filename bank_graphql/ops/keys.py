"""`bank-graphql keys create | list | revoke`: API keys, on a database URL or on the
embedded data folder `serve` uses (beside a running server, without stopping it)."""

import argparse
import asyncio
import sys
from datetime import UTC, datetime

from bank_graphql.ledger import (
    ApiKey,
    Role,
    api_key_problem,
    create_api_key,
    list_api_keys,
    one_connection,
    revoke_api_key,
)
from bank_graphql.ops.database import (
    OneLineParser,
    add_database_options,
    database,
    one_line_errors,
    refuse,
)


def add_keys_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    keys = commands.add_parser("keys", help="issue, list and revoke API keys")
    one_line_errors(keys)
    keys.set_defaults(run=run_keys)
    actions = keys.add_subparsers(dest="keys_command", required=True, parser_class=OneLineParser)
    create = actions.add_parser("create", help="issue a key and print it once, on the last line")
    create.add_argument(
        "--role", required=True, help="ADMIN, OPERATOR, CUSTOMER or READER (any case)"
    )
    create.add_argument(
        "--accounts",
        metavar="ID,ID...",
        help="limit the key to these accounts (a CUSTOMER key must be limited)",
    )
    create.add_argument("--name", default="", help="what the key is for, shown by `keys list`")
    create.add_argument(
        "--expires-in-days", type=int, metavar="N", help="expire after N days (default never)"
    )
    actions.add_parser("list", help="show every key (never the key itself)")
    revoke = actions.add_parser("revoke", help="revoke a key; servers refuse it within a second")
    revoke.add_argument("id", help="the key's id, as `keys list` shows it")
    for action in actions.choices.values():
        add_database_options(action)


def run_keys(args: argparse.Namespace) -> None:
    command = f"keys {args.keys_command}"
    if args.keys_command == "create":
        role, accounts = _create_input(args)
        with database(args, command) as url:
            key, secret = asyncio.run(_create(url, role, accounts, args))
        scope = "all accounts" if key.accounts is None else ",".join(key.accounts)
        expiry = _when(key.expires_at, "never")
        sys.stdout.write(
            f"created key {key.id} ({key.role.value}, scope: {scope}, expires: {expiry})\n"
            f"{secret}\n"
        )
    elif args.keys_command == "list":
        with database(args, command) as url:
            keys = asyncio.run(_list(url))
        sys.stdout.write(_table(keys))
    else:
        with database(args, command) as url:
            found = asyncio.run(_revoke(url, args.id))
        if not found:
            refuse("keys revoke", f"no key has the id {args.id!r}", status=1)
        sys.stdout.write(f"revoked key {args.id}\n")


def _create_input(args: argparse.Namespace) -> tuple[Role, list[str] | None]:
    role_name = args.role.strip().upper()
    if role_name not in Role.__members__:
        refuse("keys create", f"unknown role {args.role!r} (ADMIN, OPERATOR, CUSTOMER, READER)")
    accounts = None
    if args.accounts is not None:
        accounts = [a.strip() for a in args.accounts.split(",") if a.strip()]
    problem = api_key_problem(Role(role_name), accounts, args.name, args.expires_in_days)
    if problem is not None:
        refuse("keys create", problem)
    return Role(role_name), accounts


async def _create(
    url: str, role: Role, accounts: list[str] | None, args: argparse.Namespace
) -> tuple[ApiKey, str]:
    try:
        async with one_connection(url) as conn:
            return await create_api_key(
                conn,
                role,
                accounts=accounts,
                name=args.name,
                expires_in_days=args.expires_in_days,
            )
    except ValueError as exc:
        refuse("keys create", exc)


async def _list(url: str) -> list[ApiKey]:
    async with one_connection(url) as conn:
        return await list_api_keys(conn)


async def _revoke(url: str, key_id: str) -> bool:
    async with one_connection(url) as conn:
        return await revoke_api_key(conn, key_id)


def _when(at: datetime | None, absent: str = "-") -> str:
    return absent if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


_HEADINGS = ("ID", "NAME", "ROLE", "SCOPE", "CREATED", "LAST USED", "EXPIRES", "REVOKED")


def _table(keys: list[ApiKey]) -> str:
    rows = [_HEADINGS] + [
        (
            k.id,
            k.name or "-",
            k.role.value,
            "all" if k.accounts is None else ",".join(k.accounts),
            _when(k.created_at),
            _when(k.last_used_at),
            _when(k.expires_at, "never"),
            _when(k.revoked_at),
        )
        for k in keys
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADINGS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "".join(line.rstrip() + "\n" for line in lines)
