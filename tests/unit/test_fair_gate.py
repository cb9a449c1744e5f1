"""Review work shared fairly between peers: one peer's flood never starves another's requests."""

from __future__ import annotations

import asyncio

import pytest

from agent_identity.app.fair_gate import Busy, FairGate


async def hold(gate: FairGate, peer: str, served: list[str], release: asyncio.Event) -> None:
    async with gate.turn(peer):
        served.append(peer)
        await release.wait()


def test_a_flooding_peer_gets_one_turn_a_round_and_the_other_peer_the_next_free_one() -> None:
    async def scenario() -> list[str]:
        gate, served, release = FairGate(capacity=2, queue=100, patience=10), [], asyncio.Event()
        tasks = [asyncio.create_task(hold(gate, "pod", served, release)) for _ in range(20)]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(hold(gate, "apiserver", served, release)))
        await asyncio.sleep(0)
        assert served == ["pod", "pod"] and gate.waiting == 19  # at most capacity at once
        release.set()
        await asyncio.gather(*tasks)
        return served

    served = asyncio.run(scenario())
    # The API server's request, queued behind 18 of the pod's, is served in the round's second turn.
    assert served[:4] == ["pod", "pod", "pod", "apiserver"] and served.count("pod") == 20


def test_a_peer_with_a_full_queue_is_refused_at_once_and_others_are_not() -> None:
    async def scenario() -> None:
        gate, served, release = FairGate(capacity=1, queue=2, patience=10), [], asyncio.Event()
        tasks = [asyncio.create_task(hold(gate, "pod", served, release)) for _ in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(Busy, match="2 reviews from this peer are already waiting"):
            async with gate.turn("pod"):
                pass
        other = asyncio.create_task(hold(gate, "apiserver", served, release))
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(*tasks, other)
        assert served == ["pod", "pod", "apiserver", "pod"]  # its turn comes in the first round

    asyncio.run(scenario())


def test_a_request_without_a_turn_in_its_patience_is_refused_and_its_place_given_back() -> None:
    async def scenario() -> None:
        gate, served, release = FairGate(capacity=1, queue=10, patience=0.05), [], asyncio.Event()
        holder = asyncio.create_task(hold(gate, "pod", served, release))
        await asyncio.sleep(0)
        with pytest.raises(Busy, match=r"no turn within 0\.05s"):
            async with gate.turn("apiserver"):
                pass
        assert gate.waiting == 0
        release.set()
        await holder
        async with gate.turn("apiserver"):  # the turns are all free again
            assert gate.waiting == 0

    asyncio.run(scenario())


def test_a_request_that_goes_away_never_keeps_a_turn() -> None:
    async def scenario() -> None:
        gate, served, release = FairGate(capacity=1, queue=10, patience=10), [], asyncio.Event()
        holder = asyncio.create_task(hold(gate, "a", served, release))
        await asyncio.sleep(0)
        gone = asyncio.create_task(hold(gate, "b", served, release))
        await asyncio.sleep(0)
        gone.cancel()  # cancelled while waiting: withdrawn
        await asyncio.gather(gone, return_exceptions=True)
        assert gate.waiting == 0
        handed = asyncio.create_task(hold(gate, "c", served, release))
        await asyncio.sleep(0)
        release.set()
        await holder  # the turn is handed to c's request...
        handed.cancel()  # ...which goes away before it runs: the turn is handed on, not lost
        await asyncio.gather(handed, return_exceptions=True)
        assert served == ["a"]
        async with asyncio.timeout(1), gate.turn("d"):
            served.append("d")
        assert served == ["a", "d"]

    asyncio.run(scenario())
