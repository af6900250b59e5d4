"""CBOR messages, CDDL schema, stream framing and signatures (DESIGN §5, §6). Sans-IO.

- :mod:`agent.wire.cbor` — strict decoding of hostile bytes, deterministic encoding;
- :mod:`agent.wire.codec` — the typed messages of ``messages.cddl``;
- :mod:`agent.wire.schema` — validation against ``messages.cddl`` with zcbor;
- :mod:`agent.wire.cose` — COSE_Sign1 with Ed25519;
- :mod:`agent.wire.commands` — verification of central's signed commands;
- :mod:`agent.wire.framing` — length-prefixed frames of the local API;
- :mod:`agent.wire.examples` — one example of every message (docs/MESSAGES.md).
"""
