"""Per-request state: the ledger, one read snapshot opened on first use, batching loaders."""

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import strawberry
from strawberry.dataloader import DataLoader

from bank_graphql.ledger import Account, Ledger, Principal, Snapshot


@dataclass(slots=True)
class _Reads:
    snapshot: Snapshot
    balances: DataLoader[tuple[str, int], int | None]
    accounts: DataLoader[str, Account | None]


def _open_reads(snapshot: Snapshot) -> _Reads:
    async def load_balances(keys: list[tuple[str, int]]) -> list[int | None]:
        return await snapshot.balances(keys)

    async def load_accounts(ids: list[str]) -> list[Account | None]:
        found = await snapshot.accounts_by_id(ids)
        return [found.get(i) for i in ids]

    return _Reads(snapshot, DataLoader(load_fn=load_balances), DataLoader(load_fn=load_accounts))


@dataclass(slots=True)
class Context:
    """Everything a resolver may use. Reads of one request share one snapshot.

    A mutation calls `end_reads()` before it writes, so that payload fields read after it
    see its effect (mutations in one request run one after another).
    """

    ledger: Ledger
    principal: Principal
    streaming: bool = False
    """Over a WebSocket, where subscriptions can run (not over HTTP)."""
    live: bool = False
    """Set by a subscription: its operation runs until the client completes it or leaves."""
    ended: bool = False
    """Set when the client completed the operation before its subscription started."""
    history: bool = False
    """Set when the operation reads history, which a replica may serve."""
    _reads: _Reads | None = None
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def reads(self) -> _Reads:
        async with self._lock:
            if self._reads is None:
                snapshot = await self._stack.enter_async_context(
                    self.ledger.settle_due_then_snapshot(self.principal, self.history)
                )
                self._reads = _open_reads(snapshot)
            return self._reads

    async def snapshot(self) -> Snapshot:
        return (await self.reads()).snapshot

    async def balance(self, account_id: str, at: int | None) -> int | None:
        reads = await self.reads()
        return await reads.balances.load((account_id, reads.snapshot.now if at is None else at))

    async def account(self, account_id: str) -> Account | None:
        return await (await self.reads()).accounts.load(account_id)

    async def end_reads(self) -> None:
        async with self._lock:
            self._reads = None
            await self._stack.aclose()


Info = strawberry.Info[Context, None]
