"""The reference central: what it receives on the wire, how it verifies, dedupes and acks.

* ``mosquitto_sub`` (the Debian client) on ``ssc/v1/+/tx`` gets CBOR that decodes and matches
  ``messages.cddl``, and from which the sealed digest is rebuilt byte for byte;
* with TLS and the per-terminal ACL a terminal certificate cannot publish on another
  terminal's topics (central never sees it) while its own drain works end to end;
* the store: out-of-order arrival, duplicates, conflicts, bad MACs, chain breaks, terminal
  mismatch and garbage (``CentralStore.ingest`` directly, no broker needed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.journal import Journal, SealedRecord
from agent.profile import CardProfile, load_profile
from agent.psam.soft import seal_function
from agent.sim.central import CentralStore, CentralTls, ReferenceCentral, seed_backlog
from agent.testing.mosquitto import Mosquitto
from agent.tx.machine import TABLE
from agent.tx.records import Kind, TxRecord
from agent.uplink.mqtt import connection
from agent.uplink.outbox import JournalOutbox, parse_tx, tx_payload
from agent.uplink.session import TlsFiles, UplinkSession, UplinkSettings, drain_once
from agent.wire import schema
from agent.wire.cbor import decode, encode
from agent.wire.codec import (
    StatusMessage,
    TxMessage,
    ack_ranges,
    encode_tx_batch,
    split_tx_payload,
)
from agent.wire.pii import seal_personal

T = "440300907950"
U = "440300907951"


@pytest.fixture(scope="module")
def profile() -> CardProfile:
    return load_profile("default")


def _journal(path: Path) -> Journal:
    return Journal(path, transitions=TABLE)  # type: ignore[arg-type]


def _session(
    terminal: str,
    port: int,
    outbox: JournalOutbox,
    tls: TlsFiles | None = None,
    batch_max: int = UplinkSettings.batch_max,
) -> UplinkSession:
    settings = UplinkSettings(
        terminal=terminal, host="127.0.0.1", port=port, tls=tls, backlog_rate=5000.0,
        ack_timeout_s=3.0, reconnect_min_s=0.1, reconnect_max_s=0.5, batch_max=batch_max,
    )  # fmt: skip
    return UplinkSession(
        settings,
        outbox,
        encode_status=lambda on: StatusMessage(terminal, on, "t", int(time.time())).to_cbor(),
        decode_ack=lambda p: ack_ranges(p, terminal),
    )


@contextlib.asynccontextmanager
async def running(central: ReferenceCentral) -> AsyncIterator[ReferenceCentral]:
    task = asyncio.create_task(central.run())
    try:
        async with asyncio.timeout(10):
            await central.wait_ready()
        yield central
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        central.close()


# --------------------------------------------------------------------------------------------
# On the wire
# --------------------------------------------------------------------------------------------
@pytest.mark.mqtt
@pytest.mark.skipif(shutil.which("mosquitto_sub") is None, reason="needs mosquitto-clients")
@pytest.mark.parametrize(("batch_max", "messages"), [(1, 20), (8, 3)])
async def test_mosquitto_sub_sees_cddl_valid_records(
    tmp_path: Path, profile: CardProfile, batch_max: int, messages: int
) -> None:
    """A third-party client on the broker sees what the schema says: 20 records alone
    (``batch_max`` 1), or as batches of at most 8 (8 + 8 + 4), each element a record."""
    j = _journal(tmp_path / "journal.db")
    seed_backlog(j, T, 20, profile)
    with Mosquitto(tmp_path / "mq") as broker:
        sub = await asyncio.create_subprocess_exec(
            "mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-V", "mqttv5",
            "-q", "1", "-t", "ssc/v1/+/tx", "-C", str(messages), "-F", "%t %x", "-W", "20",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await asyncio.sleep(0.5)  # let it subscribe
        central = ReferenceCentral(broker.url, tmp_path / "central.db", profile)
        session = _session(T, broker.port, JournalOutbox(j), batch_max=batch_max)
        async with running(central):
            _, acked, remaining = await drain_once(session, 20)
        async with asyncio.timeout(20):
            raw, _ = await sub.communicate()
        out = raw.decode()
    assert (acked, remaining) == (20, 0)
    assert session.stats.messages == messages
    lines = out.split()
    pairs = list(zip(lines[::2], lines[1::2], strict=True))
    assert len(pairs) == messages
    seen = []
    for topic, hexdata in pairs:
        assert topic == f"ssc/v1/{T}/tx"
        payload = bytes.fromhex(hexdata)
        obj = decode(payload)
        if batch_max == 1:
            schema.validate("tx-record", obj)  # the one schema
            records = [payload]
        else:
            schema.validate("tx-batch", obj)  # every element is checked as a tx-record too
            records = split_tx_payload(payload)
            assert 2 <= len(records) <= batch_max
        for one in records:
            rec = parse_tx(one)
            sealed = j.sealed_record(rec.seq)
            assert sealed is not None
            assert rec.body == sealed.body  # central rebuilds the exact sealed bytes
            assert rec.digest == sealed.hash
            assert one == tx_payload(sealed)
            seen.append(rec.seq)
    assert seen == list(range(1, 21))  # in seq order, each once
    j.close()


@pytest.mark.mqtt
async def test_tls_acl_terminal_cannot_publish_for_another(
    tmp_path: Path, profile: CardProfile
) -> None:
    other = _journal(tmp_path / "other.db")
    seed_backlog(other, U, 3, profile)  # genuine, validly sealed records of terminal U
    forged = [tx_payload(r) for r in other.unacked(0, 10)]
    other.close()
    j = _journal(tmp_path / "journal.db")
    seed_backlog(j, T, 10, profile)
    with Mosquitto(tmp_path / "mq", tls=True) as broker:
        assert broker.tls_files is not None
        ca = str(broker.tls_files.ca)
        ccert, ckey = broker.tls_files.client("central")
        tcert, tkey = broker.tls_files.client(T)
        central = ReferenceCentral(
            broker.url, tmp_path / "central.db", profile,
            tls=CentralTls(ca, str(ccert), str(ckey)),
        )  # fmt: skip
        async with running(central):
            import ssl

            ctx = ssl.create_default_context(cafile=ca)
            ctx.load_cert_chain(str(tcert), str(tkey))
            async with connection(aiomqtt.Client(
                "127.0.0.1", broker.port, identifier="t-forger", tls_context=ctx,
                protocol=aiomqtt.ProtocolVersion.V5,
            )) as c:  # fmt: skip
                for payload in forged:
                    # the broker refuses (MQTT 5 reason 135) or drops it; never delivered
                    with contextlib.suppress(aiomqtt.MqttError):
                        await c.publish(f"ssc/v1/{U}/tx", payload, qos=1)
            tls = TlsFiles(ca, str(tcert), str(tkey))
            _, acked, remaining = await drain_once(
                _session(T, broker.port, JournalOutbox(j), tls), 20
            )
            await asyncio.sleep(0.3)
            assert (acked, remaining) == (10, 0)
            assert [r["seq"] for r in central.records(T)] == list(range(1, 11))
            assert central.records(U) == []
            assert central.alerts() == []  # it never even reached central
    j.close()


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------
@pytest.fixture
def two_forks(tmp_path: Path, profile: CardProfile) -> tuple[list[bytes], list[bytes]]:
    """Two journals of the same terminal: validly sealed, same seqs, different records."""
    out = []
    for name in ("a", "b"):
        j = _journal(tmp_path / f"{name}.db")
        seed_backlog(j, T, 5, profile)
        out.append([tx_payload(r) for r in j.unacked(0, 10)])
        j.close()
    return out[0], out[1]


def _tx(payloads: list[bytes], *seqs: int, terminal: str = T) -> list[tuple[str, bytes]]:
    return [(f"ssc/v1/{terminal}/tx", payloads[s - 1]) for s in seqs]


def test_store_out_of_order_then_contiguous(
    tmp_path: Path, profile: CardProfile, two_forks: tuple[list[bytes], list[bytes]]
) -> None:
    a, _ = two_forks
    store = CentralStore(tmp_path / "c.db")
    res = store.ingest(_tx(a, 3, 5), profile)
    assert sorted(res.acks[T]) == [3, 5]
    rows = store.query("SELECT seq, chain FROM records ORDER BY seq")
    assert rows == [(3, "pending"), (5, "pending")]
    store.ingest(_tx(a, 1, 2, 4), profile)
    rows = store.query("SELECT seq, chain FROM records ORDER BY seq")
    assert rows == [(s, "ok") for s in range(1, 6)]
    assert store.query("SELECT COUNT(*) FROM alerts") == [(0,)]
    store.close()


def test_store_duplicate_and_conflict(
    tmp_path: Path, profile: CardProfile, two_forks: tuple[list[bytes], list[bytes]]
) -> None:
    a, b = two_forks
    store = CentralStore(tmp_path / "c.db")
    store.ingest(_tx(a, 1, 2), profile)
    res = store.ingest(_tx(a, 2), profile)  # the same record again: acked again
    assert (res.acks[T], res.duplicates, res.stored) == ([2], 1, 0)
    before = store.query("SELECT digest FROM records WHERE seq = 2")
    res = store.ingest(_tx(b, 2), profile)  # a different record with seq 2: conflict
    assert res.acks[T] == [2]
    assert store.query("SELECT digest FROM records WHERE seq = 2") == before  # not overwritten
    kinds = [r[0] for r in store.query("SELECT kind FROM alerts")]
    assert kinds == ["conflict"]
    store.close()


def test_store_chain_break_bad_mac_mismatch_garbage(
    tmp_path: Path, profile: CardProfile, two_forks: tuple[list[bytes], list[bytes]]
) -> None:
    a, b = two_forks
    store = CentralStore(tmp_path / "c.db")
    res = store.ingest(_tx(a, 1) + _tx(b, 2), profile)  # b's seq 2 does not link to a's seq 1
    assert sorted(res.acks[T]) == [1, 2]
    assert store.query("SELECT seq, chain FROM records ORDER BY seq") == [(1, "ok"), (2, "broken")]
    obj = decode(a[2])
    obj["mac"] = bytes(b ^ 1 for b in obj["mac"])  # a wrong MAC, everything else intact
    tampered = encode(obj)
    res = store.ingest(
        [(f"ssc/v1/{T}/tx", tampered), *_tx(a, 4, terminal=U), (f"ssc/v1/{T}/tx", b"\xa1")],
        profile,
    )
    assert res.acks == {}  # nothing of these is acked
    assert res.rejected == 3
    kinds = sorted(r[0] for r in store.query("SELECT kind FROM alerts"))
    assert kinds == ["bad_mac", "chain_break", "malformed", "terminal_mismatch"]
    store.close()


def _batch(payloads: list[bytes], *seqs: int, terminal: str = T) -> tuple[str, bytes]:
    return (f"ssc/v1/{terminal}/tx", encode_tx_batch([payloads[s - 1] for s in seqs]))


def test_store_batch_is_stored_and_acked_record_by_record(
    tmp_path: Path, profile: CardProfile, two_forks: tuple[list[bytes], list[bytes]]
) -> None:
    a, _ = two_forks
    store = CentralStore(tmp_path / "c.db")
    res = store.ingest([_batch(a, 1, 2, 3), *_tx(a, 5), _batch(a, 3, 4)], profile)
    assert sorted(res.acks[T]) == [1, 2, 3, 3, 4, 5]  # 3 came twice: a duplicate, acked again
    assert (res.stored, res.duplicates, res.rejected) == (5, 1, 0)
    rows = store.query("SELECT seq, chain FROM records ORDER BY seq")
    assert rows == [(s, "ok") for s in range(1, 6)]
    assert store.query("SELECT COUNT(*) FROM alerts") == [(0,)]
    store.close()


def test_store_a_forged_record_in_a_batch_is_refused_alone(
    tmp_path: Path, profile: CardProfile, two_forks: tuple[list[bytes], list[bytes]]
) -> None:
    a, _ = two_forks
    obj = decode(a[1])
    obj["mac"] = bytes(x ^ 1 for x in obj["mac"])
    forged = [a[0], encode(obj), a[2]]
    store = CentralStore(tmp_path / "c.db")
    res = store.ingest([(f"ssc/v1/{T}/tx", encode_tx_batch(forged))], profile)
    assert sorted(res.acks[T]) == [1, 3]  # never an ack for the forged seq 2
    assert (res.stored, res.rejected) == (2, 1)
    assert [r[0] for r in store.query("SELECT kind FROM alerts")] == ["bad_mac"]
    assert store.query("SELECT seq, chain FROM records ORDER BY seq") == [(1, "ok"), (3, "pending")]
    store.close()


@pytest.mark.parametrize(
    "payload",
    [
        bytes.fromhex("80"),  # an empty array
        bytes.fromhex("8141a0"),  # one record is never a batch
        bytes.fromhex("820102"),  # integers, not byte strings
        bytes.fromhex("82416141"),  # truncated
        bytes.fromhex("980241a041a0"),  # length not in its shortest form
        bytes.fromhex("9f41a041a0ff"),  # indefinite length
    ],
    ids=["empty", "single", "ints", "truncated", "long-form", "indefinite"],
)
def test_store_a_malformed_batch_is_one_alert_and_nothing_stored(
    tmp_path: Path, profile: CardProfile, payload: bytes
) -> None:
    store = CentralStore(tmp_path / "c.db")
    res = store.ingest([(f"ssc/v1/{T}/tx", payload)], profile)
    assert (res.acks, res.stored, res.rejected) == ({}, 0, 1)
    assert [r[0] for r in store.query("SELECT kind FROM alerts")] == ["malformed"]
    store.close()


# --------------------------------------------------------------------------------------------
# A loss report's personal data (pii)
# --------------------------------------------------------------------------------------------
PERSONAL = {"ssn": "440301199001011234", "card_number": "A12345678", "name": "张三"}


def _loss_report(path: Path, profile: CardProfile, personal: dict[str, str]) -> SealedRecord:
    """A loss report made without the card, sealed with the terminal's (simulated) PSAM."""
    j = _journal(path)
    rec = TxRecord(
        kind=Kind.REPORT_LOSS, terminal_id=T, card_id_code=None, offline=True, reason="holder",
        personal=personal,
    )  # fmt: skip
    j.create_intent(rec)
    j.transition(rec.tx_id, "card_confirmed", result="pending")
    j.seal(rec.tx_id, seal_function(profile, bytes.fromhex(T)))
    [sealed] = j.unacked(0, 10)
    j.close()
    return sealed


def _central_at(tmp_path: Path, profile: CardProfile) -> ReferenceCentral:
    return ReferenceCentral("mqtt://127.0.0.1:1", tmp_path / "central.db", profile)


def test_store_opens_a_loss_reports_personal_data_and_shows_it_masked(
    tmp_path: Path, profile: CardProfile
) -> None:
    central = _central_at(tmp_path, profile)
    sealed = _loss_report(tmp_path / "j.db", profile, PERSONAL)
    key = central.pii_key.public_key()
    res = central.store.ingest(_tx([tx_payload(sealed, key)], 1), profile)
    assert (res.stored, res.acks) == (1, {T: [1]})
    # sent again after a lost ack: another box, the same record: a duplicate, one report
    res = central.store.ingest(_tx([tx_payload(sealed, key)], 1), profile)
    assert (res.duplicates, res.acks) == (1, {T: [1]})
    [shown] = central.loss_reports()
    assert (shown["terminal"], shown["seq"], shown["tx_id"]) == (T, 1, sealed.tx_id)
    assert (shown["ssn"], shown["card_number"], shown["name"]) == (
        "440301********1234", "*****5678", "张*",
    )  # fmt: skip
    [full] = central.loss_reports(T, show_pii=True)
    assert {k: full[k] for k in PERSONAL} == PERSONAL
    assert central.alerts() == []
    central.close()


@pytest.mark.parametrize("flaw", ["other-key", "other-data"])
def test_store_keeps_and_acks_a_record_whose_pii_it_cannot_trust_and_alerts(
    tmp_path: Path, profile: CardProfile, flaw: str
) -> None:
    """Sealed to another key, or holding other data than the sealed digest names: the record
    itself is valid (stored and acked: the terminal must not resend it for ever), no loss
    report is taken from it, and an operator is alerted."""
    central = _central_at(tmp_path, profile)
    sealed = _loss_report(tmp_path / "j.db", profile, PERSONAL)
    if flaw == "other-key":
        payload = tx_payload(sealed, X25519PrivateKey.generate().public_key())
        expected = "pii: does not open with central's key for this record"
    else:  # central's key and this record, but not the data the sealed digest names
        box = seal_personal(
            {**PERSONAL, "card_number": "B87654321"}, bytes(16),
            central.pii_key.public_key(), T, sealed.tx_id,
        )  # fmt: skip
        payload = TxMessage.with_mac(sealed.body, sealed.mac, box)
        expected = "pii: the personal data does not match the sealed personal_digest"
    res = central.store.ingest(_tx([payload], 1), profile)
    assert (res.stored, res.rejected, res.acks) == (1, 0, {T: [1]})
    assert [(a["kind"], a["seq"], a["detail"]) for a in central.alerts()] == [
        ("pii_unreadable", 1, expected)
    ]
    assert central.loss_reports() == []
    assert central.records()[0]["kind"] == "report_loss"
    central.close()


@pytest.mark.mqtt
async def test_a_loss_report_reaches_central_whole_through_the_cli(
    tmp_path: Path, profile: CardProfile, capsys: pytest.CaptureFixture[str]
) -> None:
    """``central pubkey`` gives the key, ``uplink drain --pii-key`` sends with it, and
    ``central loss-reports`` shows the report, masked; the broker only ever saw ciphertext."""
    from agent.cli import main

    state = tmp_path / "state"
    state.mkdir()
    sealed = _loss_report(state / "journal.db", profile, PERSONAL)
    db = str(tmp_path / "central.db")
    with Mosquitto(tmp_path / "mq") as broker:
        assert await asyncio.to_thread(main, ["central", "pubkey", "--db", db]) == 0
        keys = json.loads(capsys.readouterr().out)
        central = ReferenceCentral(broker.url, db, profile)
        async with running(central):
            args = ["uplink", "drain", "--state-dir", str(state), "--broker", broker.url,
                    "--pii-key", keys["pii_key"], "--timeout", "20", "--json"]  # fmt: skip
            assert await asyncio.to_thread(main, args) == 0
        assert json.loads(capsys.readouterr().out) == {"sent": 1, "acked": 1, "remaining": 0}
        assert await asyncio.to_thread(main, ["central", "loss-reports", "--db", db, "--json"]) == 0
        [report] = json.loads(capsys.readouterr().out)
    assert (report["seq"], report["tx_id"], report["ssn"]) == (
        1,
        sealed.tx_id,
        "440301********1234",
    )
    assert PERSONAL["ssn"] not in json.dumps(report)
