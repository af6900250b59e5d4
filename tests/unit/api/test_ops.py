"""The API operations against a running App on the in-process simulators (docs/API.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.api.client import ApiClient, RemoteApiError
from agent.app import App
from tests.unit.app.test_app import config, running


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[App, ApiClient]]:
    async with running(config(tmp_path / "s")) as app:
        client = await ApiClient.connect_unix(str(app.api_socket))
        try:
            yield app, client
        finally:
            await client.close()


async def error_of(
    client: ApiClient, op: str, args: dict[str, Any] | None = None
) -> dict[str, Any]:
    with pytest.raises(RemoteApiError) as err:
        await client.call(op, args or {})
    return err.value.to_dict()


@pytest.mark.parametrize(
    ("op", "args", "code"),
    [
        ("tx.lock", {}, "bad_request"),  # the idempotency key is required
        ("tx.lock", {"idempotency_key": ""}, "bad_request"),
        ("tx.lock", {"idempotency_key": "k", "reason": "blacklist"}, "bad_request"),
        ("tx.unlock", {"idempotency_key": "k", "card_id_code": "XYZ"}, "bad_request"),
        (
            "tx.activate",
            {"idempotency_key": "k", "old_pin": "12", "new_pin": "123456"},
            "bad_request",
        ),
        (
            "pin.change",
            {"idempotency_key": "k", "old_pin": 123456, "new_pin": "654321"},
            "bad_request",
        ),
        ("tx.report_loss", {"idempotency_key": "k", "ssn": "1"}, "bad_request"),
        ("card.wait", {"timeout": -1}, "bad_request"),
        ("card.read", {"show_pii": "yes"}, "bad_request"),
        ("journal.query", {"state": "nonsense"}, "bad_request"),
        ("journal.query", {"limit": 0}, "bad_request"),
        ("print.receipt", {"tx_id": "nope"}, "not_found"),
        ("no.such.op", {}, "unknown_op"),
    ],
)
async def test_bad_requests_are_refused_with_a_code(
    api: tuple[App, ApiClient], op: str, args: dict[str, Any], code: str
) -> None:
    _, client = api
    err = await error_of(client, op, args)
    assert err["code"] == code
    assert err["message"]
    assert (await client.call("status"))["state"] == "running"  # and the connection serves on


async def test_card_read_is_masked_and_personal_data_is_not_released(
    api: tuple[App, ApiClient],
) -> None:
    _, client = api
    report = await client.call("card.read")
    assert "*" in report["holder"]["ssn"]
    assert "*" in report["holder"]["name"]
    assert "*" in report["bank"]["pan"]
    err = await error_of(client, "card.read", {"show_pii": True})
    assert err["code"] == "pii_not_allowed"


async def test_refusals_carry_the_citizen_facing_messages(api: tuple[App, ApiClient]) -> None:
    _, client = api
    err = await error_of(client, "tx.unlock", {"idempotency_key": "u0"})
    assert err["code"] == "not_locked"
    assert err["message_zh"] == "此卡未锁定，无需解锁"
    locked = await client.call("tx.lock", {"idempotency_key": "l1"})
    assert locked["state"] == "sealed"
    assert locked["offline"] is True
    assert locked["receipt"]["printed"] is True
    text = await asyncio.to_thread(Path(locked["receipt"]["text_path"]).read_text, "utf-8")
    assert "锁定" in text
    err = await error_of(client, "tx.unlock", {"idempotency_key": "u1"})
    assert err["code"] == "offline_unlock_needs_authorization"
    assert err["message_zh"].startswith("网络中断")
    assert "authorization" in err["message"]


async def test_a_wrong_pin_is_a_card_refusal_with_its_journaled_record(
    api: tuple[App, ApiClient],
) -> None:
    _, client = api
    err = await error_of(
        client, "pin.change", {"idempotency_key": "p1", "old_pin": "999999", "new_pin": "111111"}
    )
    assert err["code"] == "pin_wrong"
    assert err["record"]["kind"] == "pin_change"
    assert err["record"]["outcome"] == "failed"
    # the retry with the same key learns the same outcome and does not spend another try
    again = await error_of(
        client, "pin.change", {"idempotency_key": "p1", "old_pin": "999999", "new_pin": "111111"}
    )
    assert again["record"]["tx_id"] == err["record"]["tx_id"]
    report = await client.call("card.read")
    assert report["pin_tries_left"] == 5


async def test_loss_report_offline_is_pending_and_the_journal_answers_queries(
    api: tuple[App, ApiClient],
) -> None:
    _, client = api
    rec = await client.call(
        "tx.report_loss",
        {"idempotency_key": "r1", "ssn": "110101199003071234", "card_number": "A12345678"},
    )
    assert rec["result"] == "pending"
    assert rec["has_personal"] is True
    found = await client.call("journal.query", {"tx_id": rec["tx_id"]})
    assert [r["tx_id"] for r in found["records"]] == [rec["tx_id"]]
    assert "110101199003071234" not in repr(found)
    sealed = await client.call("journal.query", {"state": "sealed", "limit": 5})
    assert rec["tx_id"] in [r["tx_id"] for r in sealed["records"]]
    verify = await client.call("journal.verify")
    assert verify == {
        "ok": True,
        "checked": 1,
        "first_seq": 1,
        "last_seq": 1,
        "bad_seq": None,
        "reason": None,
        "mac_checked": True,
    }
    reprint = await client.call("print.receipt", {"tx_id": rec["tx_id"]})
    assert reprint["printed"] is True
    assert reprint["text_path"].endswith("-reprint.txt")


async def test_card_presence_events_and_card_wait(api: tuple[App, ApiClient]) -> None:
    _, client = api
    await client.subscribe()
    await client.call("sim.card.remove")
    err = await error_of(client, "card.read")
    assert err["code"] == "no_card"
    assert (await error_of(client, "card.wait", {"timeout": 0.1}))["code"] == "timeout"
    waiter = asyncio.create_task(client.call("card.wait", {"timeout": 10}))
    await asyncio.sleep(0.05)
    inserted = await client.call("sim.card.insert", {"new": True, "seed": 7})
    assert (await waiter)["present"] is True
    seen = []
    async with asyncio.timeout(5):
        async for event, _data in client.events():
            seen.append(event)
            if event == "card_inserted":
                break
    assert seen[:2] == ["card_removed", "card_inserted"]
    report = await client.call("card.read")
    assert report["card_id_code"] == inserted["card_id_code"]
