"""Admission work shared fairly between the peers that send it.

The webhook port answers whoever reaches it, and each review may cost dozens of
SubjectAccessReviews. So review work runs at most ``capacity`` at a time, and when requests wait,
the next free turn goes to the next *peer* in a round, not to the oldest request: one client
sending reviews in a loop gets one turn in each round, and the API server's requests are served
in the turns between. A peer waits with at most ``queue`` requests; a request that has not had its
turn after ``patience`` seconds (less than the API server's webhook timeout) is answered at once
with :class:`Busy` instead.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

CAPACITY = 4
QUEUE_PER_PEER = 32
PATIENCE_SECONDS = 4.0


class Busy(Exception):
    """This peer's request got no turn: its queue is full, or it waited ``patience``."""


class FairGate:
    def __init__(self, *, capacity: int = CAPACITY, queue: int = QUEUE_PER_PEER, patience: float = PATIENCE_SECONDS) -> None:
        self.capacity, self.queue, self.patience = capacity, queue, patience
        self._free = capacity
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()  # in the round's order

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    @asynccontextmanager
    async def turn(self, peer: str) -> AsyncIterator[None]:
        """Runs the body in ``peer``'s turn. Raises :class:`Busy`."""
        await self._acquire(peer)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, peer: str) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        queue = self._waiting.setdefault(peer, deque())
        if len(queue) >= self.queue:
            raise Busy(f"{len(queue)} reviews from this peer are already waiting")
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(granted)
        try:
            await asyncio.wait({granted}, timeout=self.patience)
        except BaseException:  # the request went away: a turn handed to it meanwhile is handed on
            if granted.done():
                self._release()
            else:
                self._withdraw(peer, granted)
            raise
        if not granted.done():
            self._withdraw(peer, granted)
            raise Busy(f"no turn within {self.patience:g}s")

    def _withdraw(self, peer: str, granted: asyncio.Future[None]) -> None:
        queue = self._waiting.get(peer)
        if queue is not None:
            queue.remove(granted)
            if not queue:
                del self._waiting[peer]
        granted.cancel()

    def _release(self) -> None:
        """The turn goes to the first waiting request of the next peer in the round."""
        while self._waiting:
            peer, queue = next(iter(self._waiting.items()))
            granted = queue.popleft()
            if queue:
                self._waiting.move_to_end(peer)
            else:
                del self._waiting[peer]
            if not granted.done():
                granted.set_result(None)
                return
        self._free += 1
