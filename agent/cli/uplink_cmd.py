"""``ssc-agent uplink``: operate the MQTT uplink by hand (DESIGN §5, §8).

    ssc-agent uplink drain --state-dir DIR --broker URL [--timeout S] [--ca F --cert F --key F]
                           [--json]

``drain`` publishes the journal's unacked records (``DIR/journal.db``) and waits for central's
acks, then prints ``{"sent", "acked", "remaining"}``. Exit 0 when the outbox is empty, 1 when
records remain after the timeout, and 1 with ``{"error": {...}}`` when the broker cannot be
reached at all. It is safe to kill at any moment and run again: records leave the journal only
on central's ack, and central dedupes by (terminal, seq).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from agent.cli._common import EXIT_FAILED, EXIT_OK, print_json, report_error
from agent.config import TX_BATCH_LIMIT
from agent.errors import AgentError, ConfigError

if TYPE_CHECKING:
    from agent.journal import Journal

DEFAULT_STATE_DIR = "var/agent"
AGENT_VERSION = "0.1.0"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    uplink = subparsers.add_parser("uplink", help="drain the journal's outbox to central by hand")
    sub = uplink.add_subparsers(dest="uplink_command", metavar="ACTION")
    sub.required = True
    drain = sub.add_parser("drain", help="send unacked records and wait for central's acks")
    drain.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="agent state directory")
    drain.add_argument("--broker", required=True, help="mqtt://host:port or mqtts://host:port")
    drain.add_argument("--timeout", type=float, default=60.0, help="give up after S seconds")
    drain.add_argument("--terminal", help="terminal id (default: from the journal)")
    drain.add_argument("--ca", help="CA certificate (mqtts)")
    drain.add_argument("--cert", help="client certificate (mqtts)")
    drain.add_argument("--key", help="client key (mqtts)")
    drain.add_argument("--window", type=int, default=64, help="records in flight")
    drain.add_argument(
        "--batch",
        type=int,
        default=1,
        choices=range(1, TX_BATCH_LIMIT + 1),
        metavar=f"1..{TX_BATCH_LIMIT}",
        help="records per tx message (default 1; more only for a central that takes tx-batch)",
    )
    drain.add_argument("--rate", type=float, default=5000.0, help="backlog records per second")
    drain.add_argument("--ack-timeout", type=float, default=10.0, help="resend after S seconds")
    drain.add_argument(
        "--pii-key",
        default="",
        help="central's personal-data key (X25519, hex; uplink.central_pii_key): loss reports "
        "made without the card carry their personal data sealed to it",
    )
    drain.add_argument("--json", action="store_true", help="one-line JSON, errors as JSON")
    drain.set_defaults(handler=_drain_handler)


def _drain_handler(args: argparse.Namespace) -> int:
    # aiomqtt warns on every publish beyond ten in flight; the window is deliberate
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    try:
        result = asyncio.run(_drain(args))
    except AgentError as exc:
        return report_error(exc, as_json=args.json)
    if args.json:
        print_json(result)
    else:
        sys.stdout.write(
            f"sent {result['sent']}, acked {result['acked']}, remaining {result['remaining']}\n"
        )
    return EXIT_OK if result["remaining"] == 0 else EXIT_FAILED


def _terminal_of(journal: Journal, given: str | None) -> str | None:
    from agent.journal import decode_body

    if given:
        return given
    meta = journal.meta_get("terminal_id")
    if meta:
        return str(meta)
    rows = journal.unacked(0, 1)
    if rows:
        return str(decode_body(rows[0].body)["terminal_id"])
    return None


async def _drain(args: argparse.Namespace) -> dict[str, int]:
    from agent.journal import Journal
    from agent.tx.machine import TABLE
    from agent.uplink.outbox import JournalOutbox
    from agent.uplink.session import TlsFiles, UplinkSession, UplinkSettings, drain_once
    from agent.wire.codec import StatusMessage, ack_ranges
    from agent.wire.pii import pii_public_key

    u = urlsplit(args.broker)
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise ConfigError(f"--broker must be mqtt://host:port or mqtts://host:port: {args.broker}")
    tls = None
    if u.scheme == "mqtts":
        if not (args.ca and args.cert and args.key):
            raise ConfigError("mqtts:// needs --ca, --cert and --key")
        tls = TlsFiles(args.ca, args.cert, args.key)
    path = Path(args.state_dir) / "journal.db"
    if not path.exists():
        raise ConfigError(f"no journal at {path}")
    pii_key = pii_public_key(args.pii_key, "--pii-key")
    journal = Journal(path, transitions=TABLE)  # type: ignore[arg-type]
    try:
        outbox = JournalOutbox(journal, pii_key)
        terminal = _terminal_of(journal, args.terminal)
        if terminal is None:  # nothing was ever sealed: nothing to send
            return {"sent": 0, "acked": 0, "remaining": 0}
        settings = UplinkSettings(
            terminal=terminal,
            host=u.hostname,
            port=u.port or (8883 if tls else 1883),
            tls=tls,
            window=args.window,
            batch_max=args.batch,
            backlog_rate=args.rate,
            ack_timeout_s=args.ack_timeout,
            reconnect_min_s=0.2,
            reconnect_max_s=2.0,
            client_id=f"ssc-{terminal}-drain",
        )

        def status(online: bool) -> bytes:
            return StatusMessage(terminal, online, AGENT_VERSION, int(time.time())).to_cbor()

        session = UplinkSession(
            settings,
            outbox,
            encode_status=status,
            decode_ack=lambda p: ack_ranges(p, terminal),
        )
        try:
            sent, acked, remaining = await drain_once(session, args.timeout)
        finally:
            await asyncio.to_thread(outbox.flush)
        return {"sent": sent, "acked": acked, "remaining": remaining}
    finally:
        journal.close()
