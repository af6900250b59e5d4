"""Hypothesis strategies for every message of agent.wire.codec."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import strategies as st

from agent.wire import codec

terminals = st.text(alphabet="0123456789", min_size=12, max_size=12)
uuids = st.binary(min_size=16, max_size=16)
card_ids = st.binary(min_size=16, max_size=16)
epochs = st.integers(0, 2**40)
epochs_ms = st.integers(0, 2**50)
uint64 = st.integers(0, 2**64 - 1)
names = st.text(min_size=1, max_size=8).filter(lambda s: 1 <= len(s.encode()) <= 32)
codes = st.text(min_size=1, max_size=20).filter(lambda s: len(s.encode()) <= 64)
scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.booleans(),
    st.none(),
)
data_maps = st.dictionaries(names, st.one_of(scalars, st.lists(scalars, max_size=4)), max_size=6)
plain = st.recursive(
    st.one_of(
        st.integers(-(2**63), 2**64 - 1),
        st.text(max_size=10),
        st.binary(max_size=10),
        st.booleans(),
        st.none(),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
args_maps = st.dictionaries(names, plain, max_size=5)


@st.composite
def tx_messages(draw: st.DrawFn) -> codec.TxMessage:
    """Every shape the journal seals: card present or absent, nullable fields null or set."""

    def maybe(strategy: st.SearchStrategy[Any]) -> Any:
        return draw(st.none() | strategy)

    created = draw(epochs_ms)
    digest = maybe(st.binary(min_size=32, max_size=32))
    # a loss report's sealed personal data (opaque to the codec; agent.wire.pii makes it)
    pii = None
    if digest is not None:
        pii = maybe(st.binary(min_size=codec.PII_MIN_SIZE, max_size=codec.PII_MAX_SIZE))
    return codec.TxMessage(
        terminal_id=draw(terminals),
        seq=draw(st.integers(1, 2**64 - 1)),
        prev_hash=draw(st.binary(min_size=32, max_size=32)),
        tx_id=str(uuid.UUID(bytes=draw(uuids))),
        kind=draw(st.sampled_from(codec.TX_KINDS)),
        outcome=draw(st.sampled_from(codec.TX_OUTCOMES)),
        offline=draw(st.booleans()),
        created_at=created,
        completed_at=created + draw(st.integers(0, 10**7)),
        mac=draw(st.binary(min_size=8, max_size=8)),
        card_id_code=maybe(card_ids.map(lambda b: b.hex().upper())),
        reason=maybe(codes),
        result=maybe(codes),
        error_code=maybe(codes),
        idempotency_key=maybe(
            st.text(min_size=1, max_size=40).filter(lambda s: len(s.encode()) <= 128)
        ),
        auth_id=maybe(uuids.map(bytes.hex)),
        personal_digest=digest,
        pii=pii,
    )


authorization_requests = st.builds(
    codec.AuthorizationRequest, uuids, st.sampled_from(codec.AUTHORIZE_KINDS), card_ids
)
events = st.one_of(
    st.builds(
        codec.EventMessage,
        terminals,
        uuids,
        epochs,
        st.sampled_from([t for t in codec.EVENT_TYPES if t != "authorization_request"]),
        data_maps,
    ),
    st.builds(
        codec.EventMessage,
        terminals,
        uuids,
        epochs,
        st.just("authorization_request"),
        authorization_requests.map(codec.AuthorizationRequest.to_data),
    ),
)
statuses = st.builds(
    codec.StatusMessage,
    terminals,
    st.booleans(),
    st.text("0123456789.abc", min_size=1, max_size=32),
    epochs,
    data_maps,
)
telemetry = st.builds(
    codec.TelemetryMessage, terminals, epochs, st.dictionaries(names, uint64, max_size=8)
)


@st.composite
def acks(draw: st.DrawFn) -> codec.AckMessage:
    pairs = draw(
        st.lists(
            st.tuples(st.integers(1, 2**64 - 1), st.integers(1, 2**64 - 1)), min_size=1, max_size=8
        )
    )
    return codec.AckMessage(draw(terminals), tuple((min(a, b), max(a, b)) for a, b in pairs))


@st.composite
def config_sets(draw: st.DrawFn) -> codec.ConfigSet:
    key = draw(st.sampled_from(sorted(codec.CONFIG_SETTINGS)))
    allowed = codec.CONFIG_SETTINGS[key]
    if allowed is bool:
        value: object = draw(st.booleans())
    elif isinstance(allowed, range):
        value = draw(st.integers(allowed.start, allowed.stop - 1))
    else:
        value = draw(st.sampled_from(allowed))
    return codec.ConfigSet(key, value)  # type: ignore[arg-type]


@st.composite
def deltas(draw: st.DrawFn) -> codec.BlacklistDelta:
    ids = draw(st.lists(card_ids, unique=True, max_size=10))
    cut = draw(st.integers(0, len(ids)))
    base = draw(st.integers(0, 2**32))
    return codec.BlacklistDelta(
        base, base + draw(st.integers(1, 100)), tuple(ids[:cut]), tuple(ids[cut:])
    )


bodies = st.one_of(
    st.builds(
        codec.BlacklistSnapshot, uint64, st.lists(card_ids, unique=True, max_size=10).map(tuple)
    ),
    deltas(),
    st.builds(codec.Authorize, st.sampled_from(codec.AUTHORIZE_KINDS), card_ids, epochs),
    st.builds(
        codec.AuthorizationRefused,
        st.sampled_from(codec.AUTHORIZE_KINDS),
        st.sampled_from(codec.REFUSAL_REASONS),
        uuids,
        card_ids,
    ),
    st.builds(codec.CardReplaced, card_ids),
    config_sets(),
    st.just(codec.Ping()),
    st.just(codec.Report()),
    st.builds(codec.Resend, st.integers(1, 2**64 - 1)),
)


@st.composite
def commands(draw: st.DrawFn) -> codec.Command:
    issued = draw(epochs)
    return codec.Command(
        id=draw(uuids),
        terminal=draw(terminals | st.just("all")),
        counter=draw(uint64),
        issued=issued,
        expires=issued + draw(st.integers(1, 10**6)),
        body=draw(bodies),
    )


api_requests = st.builds(codec.ApiRequest, st.integers(0, 2**32 - 1), names, args_maps)
api_responses = st.one_of(
    st.builds(codec.ApiResponse.success, st.integers(0, 2**32 - 1), plain),
    st.builds(
        codec.ApiResponse.failure,
        st.none() | st.integers(0, 2**32 - 1),
        codes,
        st.text(max_size=40).filter(lambda s: len(s.encode()) <= 256),
    ),
)
api_events = st.builds(codec.ApiEvent, names, args_maps)

#: (strategy, class) for every top-level message
ALL = [
    (tx_messages(), codec.TxMessage),
    (events, codec.EventMessage),
    (statuses, codec.StatusMessage),
    (telemetry, codec.TelemetryMessage),
    (acks(), codec.AckMessage),
    (commands(), codec.Command),
    (api_requests, codec.ApiRequest),
    (api_responses, codec.ApiResponse),
    (api_events, codec.ApiEvent),
]
