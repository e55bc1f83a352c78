"""A subscriber process of the live benchmark: many graphql-transport-ws subscriptions over
aiohttp, every event stamped with time.monotonic() the moment it arrives.

The parent (bench/live_cells.py) drives it over a pipe:
  child  -> ("subscribed", n)            every subscribe message sent, acks received
  child  -> ("cold", accounts, ledger)   until each subscription saw a warm-up event
  child  -> ("warm",)                    every subscription is live
  child  -> ("ended", errors)            a subscription ended before it woke
  parent -> ("drain", commits, quiet_s, max_s)
  child  -> ("result", dict)             after the feed went quiet (or max_s), then exits
`commits` maps each committed transfer's distinct amount to (commit time, TRANSFER_OUT
entry id, source, target); the join happens here so that only latencies cross the pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import orjson

from bench.aio import run_async

PROTOCOL = "graphql-transport-ws"
CONNECT_CONCURRENCY = 20
WARM_TIMEOUT_S = 90.0
STATUS_EVERY_S = 0.5
SLOW = "SUBSCRIBER_TOO_SLOW"
EDGE = "cursor node { id amount kind }"
LEDGER = f"subscription L($after: String) {{ ledgerEntries(after: $after) {{ {EDGE} }} }}"
ACCOUNT = (
    "subscription A($a: ID!, $after: String)"
    f" {{ accountEntries(accountId: $a, after: $after) {{ {EDGE} }} }}"
)
Commits = dict[int, tuple[float, str | None, str, str]]


@dataclass(frozen=True, slots=True)
class FeedConfig:
    ws_url: str
    authorization: str | None  # "Bearer <key>", or None on a --no-auth server
    subs: tuple[str | None, ...]  # an account id (accountEntries), or None (ledgerEntries)
    per_connection: int
    warm_below: int  # events with a smaller amount are warm-up writes, not measured


@dataclass
class Feed:
    config: FeedConfig
    warm: list[bool] = field(default_factory=list)
    ev_sub: array[int] = field(default_factory=lambda: array("i"))
    ev_key: array[int] = field(default_factory=lambda: array("q"))  # amount * 2 + is_out
    ev_time: array[float] = field(default_factory=lambda: array("d"))
    out_ids: list[str] = field(default_factory=list)  # of TRANSFER_OUT events, in order
    errors: Counter[str] = field(default_factory=Counter)
    ended: set[int] = field(default_factory=set)
    current: list[str] = field(default_factory=list)  # each sub's operation id
    cursors: list[str | None] = field(default_factory=list)  # of its last event
    resumes: int = 0
    last_event: float = 0.0
    sockets: list[aiohttp.ClientWebSocketResponse] = field(default_factory=list)

    def on_message(self, raw: str, now: float) -> str | None:
        """Record one server message; returns a reply to send, if any."""
        message = orjson.loads(raw)
        kind = message.get("type")
        if kind == "ping":
            return '{"type":"pong"}'
        if kind not in ("next", "error", "complete"):
            return None
        operation = message["id"]
        sub = int(operation.split(".")[0])
        if operation != self.current[sub]:
            return None  # the end of an operation already resumed
        payload = message.get("payload")
        if kind == "error" or (kind == "next" and payload.get("errors")):
            errors = payload if kind == "error" else payload["errors"]
            code = str(((errors[0] or {}).get("extensions") or {}).get("code", "NO_CODE"))
            self.errors[code] += 1
            if code == SLOW:
                # What a client does (LIVE.md): resume from its last cursor, lose nothing.
                self.resumes += 1
                self.current[sub] = f"{sub}.{self.resumes}"
                return self.subscribe(sub)
            self.ended.add(sub)
            return None
        if kind == "complete":
            self.ended.add(sub)
            return None
        edge = next(iter(payload["data"].values()))
        self.cursors[sub] = edge["cursor"]
        node = edge["node"]
        amount = int(node["amount"])
        if amount < self.config.warm_below:
            self.warm[sub] = True
            return None
        is_out = node["kind"] == "TRANSFER_OUT"
        self.ev_sub.append(sub)
        self.ev_key.append(amount * 2 + is_out)
        self.ev_time.append(now)
        if is_out:
            self.out_ids.append(str(node["id"]))
        self.last_event = now
        return None

    def subscribe(self, sub: int) -> str:
        account, after = self.config.subs[sub], self.cursors[sub]
        if account is None:
            payload: dict[str, Any] = {"query": LEDGER, "variables": {"after": after}}
        else:
            payload = {"query": ACCOUNT, "variables": {"a": account, "after": after}}
        message = {"id": self.current[sub], "type": "subscribe", "payload": payload}
        return orjson.dumps(message).decode()

    def cold(self) -> tuple[list[str], int]:
        """Accounts whose subscription saw no warm-up event yet, and cold ledger feeds."""
        accounts = [
            account
            for sub, account in enumerate(self.config.subs)
            if account is not None and not self.warm[sub]
        ]
        ledger = sum(
            1 for sub, a in enumerate(self.config.subs) if a is None and not self.warm[sub]
        )
        return accounts, ledger


async def _open(
    session: aiohttp.ClientSession, feed: Feed, subs: list[int], gate: asyncio.Semaphore
) -> aiohttp.ClientWebSocketResponse:
    config = feed.config
    init: dict[str, Any] = {"type": "connection_init"}
    if config.authorization:
        init["payload"] = {"Authorization": config.authorization}
    async with gate:
        ws = await session.ws_connect(config.ws_url, protocols=(PROTOCOL,), max_msg_size=0)
        await ws.send_str(orjson.dumps(init).decode())
        ack = await asyncio.wait_for(ws.receive(), 30)
        if ack.type != aiohttp.WSMsgType.TEXT or orjson.loads(ack.data)["type"] != "connection_ack":
            raise RuntimeError(f"no connection_ack: {ack.type} {ack.data!r}")
        for sub in subs:
            await ws.send_str(feed.subscribe(sub))
    return ws


async def _read(ws: aiohttp.ClientWebSocketResponse, feed: Feed) -> None:
    async for msg in ws:
        now = time.monotonic()
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        reply = feed.on_message(msg.data, now)
        if reply is not None:
            await ws.send_str(reply)
    if ws.close_code not in (None, 1000):
        feed.errors[f"socket-closed:{ws.close_code}"] += 1


async def _recv(conn: Connection) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, conn.recv)


async def _until_warm(conn: Connection, feed: Feed) -> None:
    deadline = time.monotonic() + WARM_TIMEOUT_S
    while time.monotonic() < deadline:
        if feed.ended:
            conn.send(("ended", dict(feed.errors)))
            return
        accounts, ledger = feed.cold()
        if not accounts and not ledger:
            conn.send(("warm",))
            return
        conn.send(("cold", accounts, ledger))
        await asyncio.sleep(STATUS_EVERY_S)
    conn.send(("cold-timeout", *feed.cold()))


async def _drain(feed: Feed, commits: Commits, quiet_s: float, max_s: float) -> None:
    """Wait until every expected event came, or none for quiet_s, at most max_s."""
    expected = sum(_expected(commits, feed.config.subs))
    started = time.monotonic()
    feed.last_event = max(feed.last_event, started)
    while time.monotonic() - started < max_s and len(feed.ev_key) < expected:
        if time.monotonic() - feed.last_event >= quiet_s:
            return
        await asyncio.sleep(0.05)


def _expected(commits: Commits, subs: tuple[str | None, ...]) -> list[int]:
    """Events each subscription should get: both entries of every transfer on the ledger
    feed, an account's own entries on its feed."""
    per_account: Counter[str] = Counter()
    for _, _, source, target in commits.values():
        per_account[source] += 1
        per_account[target] += 1
    return [2 * len(commits) if account is None else per_account[account] for account in subs]


def join(feed: Feed, commits: Commits) -> dict[str, Any]:
    """Latencies (delivery - commit, seconds) and what each subscription missed or repeated."""
    latencies = array("d")
    seen: list[set[int]] = [set() for _ in feed.config.subs]
    unknown = id_mismatch = 0
    out_index = 0
    for sub, key, at in zip(feed.ev_sub, feed.ev_key, feed.ev_time, strict=True):
        commit = commits.get(key >> 1)
        if key & 1:
            out_id = feed.out_ids[out_index]
            out_index += 1
            if commit is not None and commit[1] is not None and commit[1] != out_id:
                id_mismatch += 1
        if commit is None:
            unknown += 1
            continue
        latencies.append(at - commit[0])
        seen[sub].add(key)
    expected = _expected(commits, feed.config.subs)
    distinct = sum(len(keys) for keys in seen)
    short = [
        f"{account or 'ledgerEntries'}: {len(keys)} of {count}"
        for account, keys, count in zip(feed.config.subs, seen, expected, strict=True)
        if len(keys) < count
    ]
    return {
        "latencies": latencies,
        "subs": len(feed.config.subs),
        "events": len(feed.ev_key),
        "expected": sum(expected),
        "missing": sum(expected) - distinct,
        "short_subs": short[:10],
        "duplicates": len(feed.ev_key) - unknown - distinct,
        "unknown": unknown,
        "id_mismatch": id_mismatch,
        "errors": dict(feed.errors),
        "ended": len(feed.ended),
        "resumes": feed.resumes,
    }


async def _serve(conn: Connection, config: FeedConfig) -> None:
    count = len(config.subs)
    feed = Feed(config, warm=[False] * count, current=[str(n) for n in range(count)])
    feed.cursors = [None] * count
    groups = [
        list(range(start, min(start + config.per_connection, len(config.subs))))
        for start in range(0, len(config.subs), config.per_connection)
    ]
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        sockets = await asyncio.gather(*(_open(session, feed, g, gate) for g in groups))
        readers = [asyncio.create_task(_read(ws, feed)) for ws in sockets]
        conn.send(("subscribed", len(config.subs)))
        await _until_warm(conn, feed)
        command, commits, quiet_s, max_s = await _recv(conn)
        assert command == "drain"
        await _drain(feed, commits, quiet_s, max_s)
        result = join(feed, commits)
        for ws in sockets:
            await ws.close()
        await asyncio.gather(*readers, return_exceptions=True)
    conn.send(("result", result))


def feed_main(conn: Connection, config: FeedConfig) -> None:
    """The child process's entry point (multiprocessing, spawn)."""
    try:
        run_async(_serve(conn, config))
    except (EOFError, ConnectionError):
        return  # the parent is gone or gave up on this cell: nothing to report to
    except BaseException as exc:
        with contextlib.suppress(OSError):
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        conn.close()
