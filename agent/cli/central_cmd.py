"""``ssc-agent central``: the reference central (``agent.sim.central``), DESIGN §5.

    ssc-agent central --broker URL --db FILE [--profile default] [--key FILE]
                      [--ca F --cert F --key-file F] [--group central]      (runs in the foreground)
    ssc-agent central blacklist add|remove CARD_ID [CARD_ID ...] --db FILE --broker URL
    ssc-agent central blacklist snapshot [--terminal T] --db FILE --broker URL
    ssc-agent central authorize unlock|pin_reset|pin_unblock CARD_ID [--terminal T] [--ttl S]
    ssc-agent central card-replaced CARD_ID [--terminal T]
    ssc-agent central ping|report --terminal T ;  central resend --terminal T --from-seq N
    ssc-agent central config-set KEY VALUE --terminal T   (e.g. uplink.backlog_rate 500)
    ssc-agent central events [--terminal T] [--type config_changed] [--json] --db FILE
    ssc-agent central records [--terminal T] [--json] --db FILE
    ssc-agent central alerts [--json] --db FILE
    ssc-agent central loss-reports [--terminal T] [--show-pii] [--json] --db FILE
    ssc-agent central pubkey --db FILE      (kid and Ed25519 public key, hex, for the agent's
                                             ``uplink.central_keys``; X25519 personal-data key,
                                             hex, for its ``uplink.central_pii_key``)

``--key`` is central's command-signing key (created 0600 beside the database on first use,
``<db>.signing-key``; the personal-data key beside it is ``<db>.pii-key``); ``--key-file`` is
the TLS client key. Card ids are the 32 hex digits of the card identification code. Admin
commands publish once and exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import TYPE_CHECKING, Any

from agent.cli._common import EXIT_OK, jsonable, print_json, report_error
from agent.errors import AgentError, ConfigError

if TYPE_CHECKING:
    from agent.sim.central import ReferenceCentral

_S = argparse.SUPPRESS


def _common(p: argparse.ArgumentParser, *, top: bool) -> None:
    """Options accepted before and after the action (the action's copy must not reset them)."""
    d = (lambda v: v) if top else (lambda _v: _S)
    p.add_argument("--db", default=d(None), help="central database (SQLite)")
    p.add_argument("--broker", default=d(None), help="mqtt://host:port or mqtts://host:port")
    p.add_argument("--profile", default=d("default"), help="card profile (test seal keys)")
    p.add_argument("--key", default=d(None), help="command-signing key file (Ed25519 PEM)")
    p.add_argument("--ca", default=d(None), help="CA certificate (mqtts)")
    p.add_argument("--cert", default=d(None), help="client certificate (mqtts)")
    p.add_argument("--key-file", default=d(None), help="client TLS key (mqtts)")
    p.add_argument("--group", default=d("central"), help="shared-subscription group")
    p.add_argument("--json", action="store_true", default=d(False), help="one-line JSON")
    p.add_argument(
        "--manual",
        action="store_true",
        default=d(False),
        help="keep online authorization requests pending for an operator (see `requests`; "
        "approve with `authorize KIND CARD --terminal T`) instead of deciding them",
    )
    p.add_argument(
        "--schema-every",
        type=int,
        default=d(1),
        help="check every N-th record against the CDDL with zcbor (0: never; default 1)",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    central = subparsers.add_parser("central", help="the reference central (simulator)")
    _common(central, top=True)
    central.set_defaults(handler=_run_handler)
    sub = central.add_subparsers(dest="central_command", metavar="ACTION")

    bl = sub.add_parser("blacklist", help="change the blacklist (broadcasts a signed delta)")
    _common(bl, top=False)
    bl.add_argument("action", choices=("add", "remove", "snapshot"))
    bl.add_argument("cards", nargs="*", metavar="CARD_ID")
    bl.add_argument("--terminal", help="snapshot: to this terminal only")
    bl.set_defaults(handler=_admin_handler)

    au = sub.add_parser("authorize", help="send a signed offline authorization for a card")
    _common(au, top=False)
    au.add_argument("kind", choices=("unlock", "pin_reset", "pin_unblock"))
    au.add_argument("card", metavar="CARD_ID")
    au.add_argument("--terminal", help="default: the last terminal that reported the card")
    au.add_argument("--ttl", type=int, default=3600, help="validity in seconds")
    au.set_defaults(handler=_admin_handler, action="authorize")

    cr = sub.add_parser("card-replaced", help="the card was replaced: never unlock it again")
    _common(cr, top=False)
    cr.add_argument("card", metavar="CARD_ID")
    cr.add_argument("--terminal", help="default: all terminals")
    cr.set_defaults(handler=_admin_handler, action="card_replaced")

    for name in ("ping", "report", "resend"):
        p = sub.add_parser(name, help=f"send a signed {name} command to a terminal")
        _common(p, top=False)
        p.add_argument("--terminal", required=True)
        if name == "resend":
            p.add_argument("--from-seq", type=int, required=True)
        p.set_defaults(handler=_admin_handler, action=name)

    cs = sub.add_parser(
        "config-set", help="change a terminal setting (signed config_set; docs/MESSAGES.md)"
    )
    _common(cs, top=False)
    # dest "setting", not "key": that is --key, the signing key file
    cs.add_argument(
        "setting", metavar="KEY", help="uplink.backlog_rate, log.level, policy.report_loss_offline…"
    )
    cs.add_argument("value", metavar="VALUE", help="true/false, an integer, or a word (DEBUG…)")
    cs.add_argument("--terminal", required=True)
    cs.set_defaults(handler=_admin_handler, action="config_set")

    ev = sub.add_parser("events", help="list the events terminals reported (masked)")
    _common(ev, top=False)
    ev.add_argument("--terminal")
    ev.add_argument("--type", help="only events of this type, e.g. config_changed")
    ev.set_defaults(handler=_query_handler, action="events")

    rec = sub.add_parser("records", help="list the stored records")
    _common(rec, top=False)
    rec.add_argument("--terminal")
    rec.set_defaults(handler=_query_handler, action="records")

    rq = sub.add_parser("requests", help="list online authorization requests and their decisions")
    _common(rq, top=False)
    rq.add_argument("--terminal")
    rq.add_argument("--pending", action="store_true", help="only those waiting for an operator")
    rq.set_defaults(handler=_query_handler, action="requests")

    lr = sub.add_parser("loss-reports", help="loss reports whose personal data arrived")
    _common(lr, top=False)
    lr.add_argument("--terminal")
    lr.add_argument(
        "--show-pii", action="store_true", help="ID and card numbers unmasked (central's staff)"
    )
    lr.set_defaults(handler=_query_handler, action="loss-reports")

    al = sub.add_parser("alerts", help="list alerts (bad MACs, chain breaks, conflicts)")
    _common(al, top=False)
    al.set_defaults(handler=_query_handler, action="alerts")

    pk = sub.add_parser("pubkey", help="print the command-signing public key (hex)")
    _common(pk, top=False)
    pk.set_defaults(handler=_query_handler, action="pubkey")


def _central(args: argparse.Namespace, *, need_broker: bool) -> ReferenceCentral:
    from agent.profile import load_profile
    from agent.sim.central import CentralTls, ReferenceCentral

    if not args.db:
        raise ConfigError("--db is required")
    broker = args.broker
    if broker is None:
        if need_broker:
            raise ConfigError("--broker is required")
        broker = "mqtt://127.0.0.1:1883"  # queries never connect
    tls = None
    if args.ca or args.cert or args.key_file:
        if not (args.ca and args.cert and args.key_file):
            raise ConfigError("TLS needs --ca, --cert and --key-file")
        tls = CentralTls(args.ca, args.cert, args.key_file)
    return ReferenceCentral(
        broker,
        args.db,
        load_profile(args.profile),
        args.key,
        tls=tls,
        group=args.group,
        schema_every=args.schema_every,
        auto_authorize=not args.manual,
    )


def _run_handler(args: argparse.Namespace) -> int:
    try:
        central = _central(args, need_broker=True)
    except AgentError as exc:
        return report_error(exc, as_json=args.json)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(central.run())
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    sys.stderr.write(
        f"central: {args.broker} db={args.db} kid={central.kid.hex()} "
        f"pubkey={central.public_key.hex()} pii_key={central.pii_public_key.hex()}\n"
    )
    try:
        asyncio.run(main())
    finally:
        central.close()
    return EXIT_OK


def _admin_handler(args: argparse.Namespace) -> int:
    try:
        central = _central(args, need_broker=True)
    except AgentError as exc:
        return report_error(exc, as_json=args.json)
    try:
        result = asyncio.run(_admin(central, args))
    except AgentError as exc:
        return report_error(exc, as_json=args.json)
    finally:
        central.close()
    print_json(result)
    return EXIT_OK


async def _admin(central: ReferenceCentral, args: argparse.Namespace) -> dict[str, Any]:
    action = args.action
    terminal = getattr(args, "terminal", None)
    if action == "add":
        return {"blacklist_version": await central.blacklist_add(args.cards)}
    if action == "remove":
        return {"blacklist_version": await central.blacklist_remove(args.cards)}
    if action == "snapshot":
        return {"blacklist_version": await central.send_blacklist_snapshot(terminal)}
    if action == "authorize":
        sent_to = await central.authorize(args.kind, args.card, terminal, args.ttl)
        return {"authorized": args.kind, "terminal": sent_to}
    if action == "card_replaced":
        await central.card_replaced(args.card, terminal)
        return {"card_replaced": True, "terminal": terminal or "all"}
    target = str(terminal)  # ping / report / resend / config-set require --terminal
    if action == "config_set":
        value = _setting_value(args.value)
        await central.config_set(target, args.setting, value)
        return {"sent": action, "terminal": target, "key": args.setting, "value": value}
    if action == "ping":
        await central.ping(target)
    elif action == "report":
        await central.report(target)
    elif action == "resend":
        await central.resend(target, args.from_seq)
    return {"sent": action, "terminal": terminal}


def _setting_value(raw: str) -> str | int | bool:
    """A ``config-set`` value from the command line: ``true``/``false``, an integer, or text
    (``ConfigSet`` then checks it against the key's allowed values)."""
    if raw in ("true", "false"):
        return raw == "true"
    try:
        return int(raw)
    except ValueError:
        return raw


def _query_handler(args: argparse.Namespace) -> int:
    try:
        central = _central(args, need_broker=False)
    except AgentError as exc:
        return report_error(exc, as_json=args.json)
    try:
        if args.action == "pubkey":
            print_json(
                {
                    "kid": central.kid.hex(),
                    "public_key": central.public_key.hex(),
                    "pii_key": central.pii_public_key.hex(),
                }
            )
            return EXIT_OK
        terminal = getattr(args, "terminal", None)
        if args.action == "records":
            rows = central.records(terminal)
        elif args.action == "loss-reports":
            rows = central.loss_reports(terminal, show_pii=args.show_pii)
        elif args.action == "events":
            rows = [
                {"terminal": e.terminal, "time": e.time, "type": e.type, "data": jsonable(e.data)}
                for e in central.events(terminal)
                if args.type is None or e.type == args.type
            ]
        elif args.action == "requests":
            rows = central.authorization_requests(terminal)
            if args.pending:
                rows = [r for r in rows if r["decision"] == "pending"]
        else:
            rows = central.alerts()
    finally:
        central.close()
    if args.json:
        print_json(rows)
        return EXIT_OK
    if not rows:
        sys.stdout.write(f"no {args.action}\n")
        return EXIT_OK
    cols = list(rows[0])
    sys.stdout.write("\t".join(cols) + "\n")
    for r in rows:
        sys.stdout.write("\t".join(str(r[c]) for c in cols) + "\n")
    return EXIT_OK
