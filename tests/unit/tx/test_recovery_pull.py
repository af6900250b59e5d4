"""The card pulled at every APDU index of every flow, before and after the card processed it
(DESIGN §9): after the card is seen again every record is resolved (sealed done or failed, or —
for a PIN the card cannot reveal — confirmed by the citizen), and the outcome matches the
virtual card's true state read directly. Nothing is lost, nothing doubled."""

from __future__ import annotations

import pytest

from agent.errors import CardRefusedError, CardRemovedError, TransactionInDoubtError
from agent.sim.channel import FaultPlan

from ._txsupport import FLOWS, NEW_PIN, prepared


async def _apdus(flow: str, alg: str) -> int:
    t = await prepared(flow, alg)
    ch = t.channel()
    await FLOWS[flow]["run"](t, ch)
    return ch.apdu_count


@pytest.mark.parametrize("alg", ["des", "sm4"])
@pytest.mark.parametrize("flow", sorted(FLOWS))
async def test_card_pulled_at_every_apdu(flow: str, alg: str) -> None:
    n = await _apdus(flow, alg)
    assert n > 3
    outcomes = set()
    for k in range(n):
        for processed in (False, True):
            t = await prepared(flow, alg)
            ch = t.channel(FaultPlan().pull(k, processed=processed))
            try:
                await FLOWS[flow]["run"](t, ch)
                raised = None
            except (CardRemovedError, TransactionInDoubtError, CardRefusedError) as err:
                raised = err
            assert raised is not None, f"pull at {k} went unnoticed"
            await t.recovery.on_card_seen(t.channel(), auto_lock=False)
            rows = [r for r in t.journal.records() if r.kind == flow]
            truth = FLOWS[flow]["truth"](t)
            where = f"{flow}/{alg} pulled at APDU {k} processed={processed}"
            assert len(rows) <= 1, where
            if not rows:
                assert not truth, f"{where}: the card changed without a record"
                assert isinstance(raised, CardRemovedError), where
                outcomes.add("no_record")
                continue
            row = rows[0]
            was_in_doubt = isinstance(raised, TransactionInDoubtError)
            if row.state == "in_doubt":
                # only a PIN the card cannot reveal stays in doubt; the citizen settles it
                assert flow in ("pin_change", "pin_reset", "pin_unblock"), where
                await t.recovery.confirm_pin(t.channel(), row.tx_id, NEW_PIN)
                row = t.journal.get(row.tx_id)
                assert row is not None
            assert row.state == "sealed", where
            assert (row.outcome == "done") is truth, f"{where}: {row.outcome} vs card {truth}"
            # central hears how an in-doubt record ended: one tx_resolved, with its outcome
            events = t.journal.events(0, 100)
            doubted = [e.data["tx_id"] for e in events if e.kind == "tx_in_doubt"]
            assert doubted == ([row.tx_id] if was_in_doubt else []), where
            resolved = [e for e in events if e.kind == "tx_resolved"]
            told = [(e.data["tx_id"], e.data["outcome"]) for e in resolved]
            assert told == ([(row.tx_id, row.outcome)] if was_in_doubt else []), where
            assert t.verify_chain(), where
            outcomes.add(row.outcome)
    # the campaign reached both sides of the write
    assert {"no_record", "failed", "done"} <= outcomes
