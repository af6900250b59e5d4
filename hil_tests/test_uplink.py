"""Uplink: TLS connection to the broker with the terminal's certificate; one sealed record
round trip to central's ack (``ssc/v1/<terminal>/ack``), timed.

The record is a ``lock`` attempt that touched no card (outcome ``failed``, error code
``hil_test``), sealed by the security module (the PSAM; under ``--sim`` without a PSAM the
simulator's test keys) so central verifies its MAC, from a scratch journal. On a production
central it shows up as such; point ``--broker`` at a staging central where that matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hil_tests.conftest import HilEnv, HilFailure

pytestmark = pytest.mark.uplink


def _target(hil: HilEnv) -> tuple[str, int, ssl.SSLContext | None]:
    if not hil.broker:
        pytest.skip("no broker configured (--broker mqtts://host:port --ca --cert --key)")
    from agent.sim.central import parse_broker_url

    host, port, tls = parse_broker_url(hil.broker)
    if not tls:
        return host, port, None
    if not (hil.ca and hil.cert and hil.key):
        pytest.skip("mqtts:// needs --ca, --cert and --key")
    ctx = ssl.create_default_context(cafile=hil.ca)
    ctx.load_cert_chain(hil.cert, hil.key)
    return host, port, ctx


async def test_tls_connect(hil: HilEnv) -> None:
    import aiomqtt

    from agent.uplink.mqtt import connection

    host, port, ctx = _target(hil)
    t0 = time.perf_counter()
    try:
        async with connection(
            aiomqtt.Client(
                host,
                port,
                identifier=f"hil-{hil.terminal_id or 'terminal'}-connect",
                tls_context=ctx,
                protocol=aiomqtt.ProtocolVersion.V5,
                timeout=10,
            )
        ):
            connected = time.perf_counter() - t0
    except aiomqtt.MqttError as e:
        raise HilFailure(
            f"cannot connect to {hil.broker}: {e}",
            "check the network, the firewall, the broker's CA (--ca) and the client "
            "certificate (--cert/--key, its name must be the terminal id)",
        ) from None
    hil.run.add_timing("broker TLS connect (MQTT 5 CONNACK)", f"{connected * 1000:.0f} ms")
    hil.run.add_inventory("broker", f"{hil.broker} ({'TLS' if ctx else 'plain'})")


@contextlib.asynccontextmanager
async def _sealer(hil: HilEnv) -> AsyncIterator[tuple[Any, str]]:
    """(security module, terminal id): the PSAM, else the simulator's test keys."""
    from agent.psam.client import terminal_id

    if hil.psam:
        from agent.drivers.pcsc import PcscReader
        from agent.psam.client import PsamSecurityModule

        async with PcscReader(hil.psam) as reader, reader.session() as channel:
            sam = PsamSecurityModule(channel, hil.profile)
            yield sam, terminal_id(await sam.terminal_number())
        return
    if hil.sim is not None and hil.terminal_id:
        from agent.psam.soft import SoftSecurityModule

        yield SoftSecurityModule(hil.profile, bytes.fromhex(hil.terminal_id)), hil.terminal_id
        return
    pytest.skip("sealing a record needs the PSAM (--psam)")


async def test_record_round_trip(hil: HilEnv, tmp_path: Path) -> None:
    host, port, ctx = _target(hil)
    from agent.journal.store import Journal
    from agent.tx.machine import TABLE
    from agent.tx.records import Kind, TxRecord
    from agent.uplink.outbox import JournalOutbox
    from agent.uplink.session import TlsFiles, UplinkSession, UplinkSettings, cancel_and_wait
    from agent.wire.codec import StatusMessage, ack_ranges

    async with _sealer(hil) as (sam, terminal):
        journal = Journal(tmp_path / "uplink.db", transitions=TABLE)  # type: ignore[arg-type]
        try:
            rec = TxRecord(
                kind=Kind.LOCK, terminal_id=terminal, card_id_code=None, offline=False,
                reason="hil_test",
            )  # fmt: skip
            journal.create_intent(rec)
            journal.transition(rec.tx_id, "card_refused", error_code="hil_test")
            sealed = await journal.seal_async(rec.tx_id, sam.seal_mac)
            outbox = JournalOutbox(journal)
            settings = UplinkSettings(
                terminal=terminal,
                host=host,
                port=port,
                tls=TlsFiles(hil.ca or "", hil.cert or "", hil.key or "") if ctx else None,
                ack_timeout_s=10.0,
                reconnect_min_s=0.2,
                reconnect_max_s=1.0,
                client_id=f"hil-{terminal}",
            )
            session = UplinkSession(
                settings,
                outbox,
                encode_status=lambda on: StatusMessage(
                    terminal, on, "hil", int(time.time())
                ).to_cbor(),
                decode_ack=lambda p: ack_ranges(p, terminal),
            )
            t0 = time.perf_counter()
            task = asyncio.create_task(session.run())
            try:
                async with asyncio.timeout(20):
                    await session.wait_online()
                    online = time.perf_counter() - t0
                    t1 = time.perf_counter()
                    session.wake()
                    while await asyncio.to_thread(outbox.unacked_count):  # noqa: ASYNC110
                        await asyncio.sleep(0.02)
                    acked = time.perf_counter() - t1
            except TimeoutError:
                raise HilFailure(
                    f"central did not ack record seq {sealed.seq} within 20 s "
                    f"(last uplink error: {session.stats.last_error or 'none'})",
                    "check that central runs and can verify this terminal's PSAM MACs; "
                    "check the broker ACL for ssc/v1/<terminal>/#",
                ) from None
            finally:
                await cancel_and_wait(task)
        finally:
            journal.close()
    hil.run.add_timing("uplink connect (TLS, subscribed)", f"{online * 1000:.0f} ms")
    hil.run.add_timing("record round trip to central ack", f"{acked * 1000:.0f} ms")
    if hil.sim is not None:
        rows = hil.sim.central.records(terminal)
        assert [r["tx_id"] for r in rows][-1:] == [rec.tx_id]
        assert rows[-1]["chain"] == "ok"
