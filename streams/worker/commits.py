"""Offset commits that never pass over an event nobody processed, across rebalances.

Faust's consumer keeps, per partition, the acked offsets, the committed offset and the gaps, and
commits the end of the first run of consecutive acked offsets. The scale test (two workers, one
killed, a third joining; ``scripts/scale_runs.py``) lost 16-113 events in 4 of 11 runs, all
unanswered and committed over, in partitions a worker kept or took over at a rebalance. Logging
every commit and gap showed the holes:

1. *Acks of a revoked generation.* A rebalance revokes every partition (the eager protocol) and
   faust clears the bookkeeping; the new generation id is only known at the assignment, seconds
   later. A batch finished in between was acked into the cleared bookkeeping, where the
   committed offset reads ``None`` ("never committed"), and committed from there during the
   rebalance (``browse[5]=146 (was None)``, ``rebalancing=True``).
2. *Commits during a rebalance*, computed before the revoke and sent after it (the flush before
   them can take seconds under load).
3. *A gap from a stale seek.* Faust resumes the flow after a rebalance and then seeks to the
   committed offsets; records delivered in between left the seek's "first record expected"
   mark standing, and the next record far ahead took everything up to it as a gap (``gap
   146..242`` with 159 committed: 84 events lost). Fixed in the transport: nothing of an event
   topic is delivered in a generation before its seek (``_Consumer._deliverable``); what is
   fetched meanwhile is put back by a seek to it (without that seek, 3 of 3 runs lost 93-251
   events in the partitions a worker kept: the generation's seek does not bring them back).
4. *The ends of a run.* Faust accepts a run starting one past the committed offset (it checks
   ``min(acked) - committed > 1``), but the committed offset is the next one to process; and
   starts a gap one past it too, so the two errors met. Both start *at* it here.

:class:`GenerationGuard` (mixed into the transport's consumer) closes 1, 2 and 4: a revoke marks
the app revoked until the assignment (``KafkaApp.revoked``); acks of a message of an older or
revoked generation are refused; no commit is computed or sent while revoked or after the
generation changed (checked again after the flush); a run and a gap start at the committed
offset. :func:`generation_live` is the same test for the agent (:mod:`streams.worker.batching`,
:mod:`streams.worker.agents`): a batch whose generation is no longer live writes, sends and acks
nothing, and its events are read again by their partition's owner (idempotent:
``InterestState.applied_offsets``). Afterwards 11 of 12 runs lost nothing; the twelfth lost 31
events at a join; with the transport's seek lock (``_Consumer._seek_lock``) 32 of 32 runs lost
nothing (docs/benchmarks.md "Two workers under kill -9").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from faust.types import TP, AppT
from faust.types.tuples import Message
from faust.utils import terminal
from faust.utils.functional import consecutive_numbers

__all__ = ["GenerationGuard", "generation_live"]

log = logging.getLogger(__name__)


def generation_live(app: AppT, generation: int | None) -> bool:
    """Whether work read in consumer ``generation`` may still be written, sent and acked: it is
    the app's current generation and no rebalance has revoked the partitions since."""
    return app.consumer_generation_id == generation and not getattr(app, "revoked", False)


class GenerationGuard:
    """Corrections of :class:`faust.transport.consumer.Consumer`'s ack and commit bookkeeping;
    mixed in before faust's consumer class (it calls ``super()``)."""

    app: Any
    _acked: Any
    _acked_index: Any
    _gap: Any
    _committed_offset: Any

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        # first of all: a batch that finishes while the revoke runs must not ack or write
        self.app.revoked = True
        await super().on_partitions_revoked(revoked)  # type: ignore[misc]

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        # the new generation id is set (by the consumer thread) before this runs; the first
        # generation can have the id of the app's start (0 on Tansu)
        self.app.revoked = False
        await super().on_partitions_assigned(assigned, generation_id)  # type: ignore[misc]

    def ack(self, message: Message) -> bool:
        if not generation_live(self.app, message.generation_id):
            return False  # read again from the committed offset by the partition's owner
        return bool(super().ack(message))  # type: ignore[misc]

    async def _commit_tps(self, tps: Any, start_new_transaction: bool) -> bool:
        if not generation_live(self.app, self.app.consumer_generation_id):
            return False  # a rebalance runs: nothing is committed until the assignment
        return bool(await super()._commit_tps(tps, start_new_transaction))  # type: ignore[misc]

    async def _commit_offsets(
        self, offsets: Mapping[TP, int], start_new_transaction: bool = True
    ) -> bool:
        """Faust's, committing only while the generation the offsets were computed in is live,
        checked again after the producer's flush (which can take seconds), and updating the
        committed offsets only after a commit that happened."""
        generation = self.app.consumer_generation_id
        if not generation_live(self.app, generation):
            return False
        assignment = self.assignment()  # type: ignore[attr-defined]
        committable = {tp: o for tp, o in offsets.items() if tp in assignment}
        if len(committable) < len(offsets):
            log.info("commit discarded for revoked partitions (read again by their owner): %r",
                     sorted(set(offsets) - set(committable)))  # fmt: skip
        if not committable:
            return False
        log.debug("commit offsets:\n%s", terminal.logtable(
            [(str(tp), str(o)) for tp, o in committable.items()], title="Commit Offsets",
            headers=["TP", "Offset"]))  # fmt: skip
        if self.in_transaction:  # type: ignore[attr-defined]
            done = await self.transactions.commit(  # type: ignore[attr-defined]
                committable, start_new_transaction=start_new_transaction)  # fmt: skip
        else:
            await self.app.producer.flush()
            if not generation_live(self.app, generation):
                log.info("a rebalance came during the flush before a commit: not committed")
                return False
            done = await self._commit(committable)  # type: ignore[attr-defined]
        if not done:
            return False
        self.app.tables.on_commit(committable)
        self._committed_offset.update(committable)
        self.app.monitor.on_tp_commit(committable)
        return True

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """Count ``offset_from..offset_to`` (both included) as done: offsets the log does not
        hold (compaction, retention, transaction markers). Faust's starts such a gap one past the
        committed offset, which is the next to process: a run could then never start at it."""
        committed = self._committed_offset[tp]
        if committed is not None:
            offset_from = max(offset_from, committed)
        if offset_from <= offset_to:
            gaps = self._gap[tp]
            gaps.addi(offset_from, offset_to + 1)
            await asyncio.sleep(0)  # a long gap: let health checks in
            gaps.merge_overlaps()

    def _new_offset(self, tp: TP) -> int | None:
        """The end of the run of acked (or gap) offsets that starts at the committed offset;
        ``None`` when there is none (faust's, with the run required to start *at* it)."""
        acked: list[int] = self._acked[tp]
        if not acked:
            return None
        gaps = self._gap[tp]
        if gaps:
            top = max(acked)
            filled: list[int] = []
            for entry in sorted(gaps.overlap(0, top), key=lambda x: x.begin):
                filled.extend(range(entry.begin, entry.end))
            if filled:
                acked.extend(filled)
                gaps.chop(0, max(filled[-1], top + 1))
        acked[:] = sorted(set(acked))
        committed = self._committed_offset[tp]
        if committed is not None and acked[0] > committed:
            return None  # the event at the committed offset is not done yet
        run = next(consecutive_numbers(acked))
        del acked[: len(run)]
        self._acked_index[tp].difference_update(run)
        return int(run[-1]) + 1
