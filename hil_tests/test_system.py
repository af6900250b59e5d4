"""System: pcscd answers, the journal has disk space, the clock agrees with central's."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time

import pytest

from hil_tests.conftest import HilEnv, HilFailure

pytestmark = pytest.mark.system


async def test_pcscd_running(hil: HilEnv) -> None:
    if not (hil.reader or hil.psam):
        pytest.skip("no PC/SC device configured (--reader/--psam, or --sim)")
    from agent.drivers.pcsc import PcscSystem
    from agent.errors import PcscServiceError

    async with PcscSystem() as system:
        t0 = time.perf_counter()
        try:
            readers = await system.list_readers()
        except PcscServiceError as e:
            socket = os.environ.get("PCSCLITE_CSOCK_NAME", "/run/pcscd/pcscd.comm")
            raise HilFailure(
                f"pcscd does not answer on {socket}: {e.message}",
                "start pcscd: systemctl start pcscd (apt install pcscd)",
            ) from None
        hil.run.add_timing("pcscd list readers", f"{(time.perf_counter() - t0) * 1000:.1f} ms")
    hil.run.add_inventory("PC/SC readers", ", ".join(readers) or "none")


def test_journal_disk_space(hil: HilEnv) -> None:
    target = hil.state_dir.absolute()
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".hil-") as f:
            f.write(b"ssc-agent hil")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise HilFailure(
            f"the journal directory {existing} is not writable: {e.strerror}",
            f"chown the state directory to the agent's user: chown -R ssc-agent {target}",
        ) from None
    free_mb = shutil.disk_usage(existing).free // (1024 * 1024)
    hil.run.add_inventory("journal directory", f"{target} ({free_mb} MiB free)")
    need = hil.opt("min_free_mb")
    if free_mb < need:
        raise HilFailure(
            f"only {free_mb} MiB free for the journal in {existing}, {need} MiB needed",
            "free disk space (old logs, /var/cache/apt) or move the state directory",
        )


async def test_clock_skew_against_central(hil: HilEnv) -> None:
    """Central's clock, read from the ``issued`` time of a signed ping it sends (seconds)."""
    if hil.sim is None:
        pytest.skip(
            "needs a central the suite can ask for a command (--sim); on site compare with "
            "`timedatectl` / `chronyc tracking`"
        )
    import ssl

    import aiomqtt

    from agent.uplink import topics
    from agent.uplink.mqtt import connection
    from agent.wire import cose
    from agent.wire.codec import Command

    sim, terminal = hil.sim, hil.terminal_id
    assert terminal is not None
    assert hil.ca
    assert hil.cert
    assert hil.key
    ctx = ssl.create_default_context(cafile=hil.ca)
    ctx.load_cert_chain(hil.cert, hil.key)
    async with connection(
        aiomqtt.Client(
            "127.0.0.1",
            sim.broker.port,
            identifier=f"hil-{terminal}-clock",
            tls_context=ctx,
            protocol=aiomqtt.ProtocolVersion.V5,
        )
    ) as client:
        await client.subscribe(topics.cmd(terminal), qos=1)
        await asyncio.to_thread(sim.call, sim.central.ping(terminal))
        async with asyncio.timeout(10):
            async for msg in client.messages:
                received = time.time()
                payload = msg.payload
                assert isinstance(payload, bytes | bytearray)
                central = sim.central
                inner = cose.verify(bytes(payload), {central.kid: central.key.public_key()})
                cmd = Command.from_cbor(inner)
                break
    skew = received - cmd.issued  # issued is whole seconds: +-1 s resolution
    hil.run.add_timing("clock skew against central", f"{skew:+.1f} s (1 s resolution)")
    limit = hil.opt("max_clock_skew")
    if abs(skew) > limit + 1:
        raise HilFailure(
            f"clock differs from central by {skew:+.1f} s (limit {limit:g} s)",
            "enable time sync: timedatectl set-ntp true (signed commands expire by the clock)",
        )
