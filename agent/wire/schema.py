"""Validation of decoded messages against ``messages.cddl`` with zcbor (DESIGN §5).

``validate(rule, obj)`` checks a decoded value (as cbor2 returns it) against one rule of the
schema, e.g. ``validate("tx-record", obj)``. zcbor matches map members in the order the schema
lists them, and the schema lists them in deterministic encoding order, so maps are put in that
order first (a sender may use any order; the agent always sends deterministic CBOR).

Cost: zcbor's Python validator walks the schema per message (about a millisecond for a
record, much more for a 100,000-entry blacklist snapshot). The codecs in :mod:`agent.wire.codec`
do their own strict field checks on the hot path; this module is what tests, the reference
central and ``validate=True`` decoding use to prove the codecs and the schema agree.

Not thread-safe: zcbor's translators keep per-node error lists (cleared after each call here).

Compatibility: zcbor 0.9.1 imports ``cbor2.CBORDecodeValueError``, which cbor2 6 removed (its
decode errors all derive from ``CBORDecodeError``); the alias is installed before the import.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cache, lru_cache
from importlib import resources
from typing import Any

import cbor2

from agent.errors import WireError

__all__ = ["RULES", "cddl_text", "validate"]

#: The entry rules of the schema (the messages); other rules are building blocks.
RULES = (
    "tx-record",
    "tx-batch",
    "event",
    "status",
    "telemetry",
    "ack",
    "signed-command",
    "command",
    "api-request",
    "api-response",
    "api-event",
)

# zcbor needs a maximum for "*" repetitions; every list in the schema has an explicit bound,
# so this only limits open maps and is set to the largest bound in the schema.
_DEFAULT_MAX_QTY = 100_000


def cddl_text() -> str:
    """The schema text shipped with the package."""
    return resources.files("agent.wire").joinpath("messages.cddl").read_text(encoding="utf-8")


def _zcbor() -> Any:
    if not hasattr(cbor2, "CBORDecodeValueError"):
        cbor2.CBORDecodeValueError = cbor2.CBORDecodeError  # type: ignore[attr-defined]
    import zcbor

    _quiet(_zcbor_module())
    _reused_tuples(_zcbor_module())
    _lazy_messages(zcbor.DataTranslator)
    return zcbor


def _reused_tuples(impl: Any) -> None:
    """zcbor 0.9 makes a new ``namedtuple`` class for every map and group it decodes, and
    ``namedtuple()`` compiles its class with ``eval``: half of a record's validation time. Its
    module's ``namedtuple`` becomes one that makes each class once per field list (the lists
    are the schema's own names, a bounded set; the cache is bounded anyway)."""
    if getattr(impl, "_ssc_reused_tuples", False):
        return
    make = impl.namedtuple

    @lru_cache(maxsize=1024)
    def reused(typename: str, names: tuple[str, ...]) -> Any:
        return make(typename, names)

    def namedtuple(typename: str, field_names: Any, **kwargs: Any) -> Any:
        if kwargs or not isinstance(field_names, tuple | list):
            return make(typename, field_names, **kwargs)
        return reused(typename, tuple(field_names))

    impl.namedtuple = namedtuple
    impl._ssc_reused_tuples = True


def _quiet(impl: Any) -> None:
    """zcbor prints its union back-tracking notes (``print``/``pprint``) when a validation
    fails. Its module's ``print`` and ``pprint`` become no-ops, for that module only: a
    ``redirect_stdout`` around each call swapped the process-wide ``sys.stdout``, so whatever
    another thread printed meanwhile (a CLI's JSON, a log line) was swallowed."""

    def _silent(*_args: Any, **_kwargs: Any) -> None:
        return None

    impl.print = _silent
    impl.pprint = _silent


def _lazy_messages(translator: Any) -> None:
    """zcbor 0.9 formats the error message of two checks (with ``pprint``) before it knows the
    check failed: two thirds of a record's validation time. The same checks, formatting only
    on failure; the messages are unchanged. Skipped if zcbor's methods are not the expected
    ones (another version keeps its own, only slower)."""
    check_type = getattr(translator, "_check_type", None)
    handle_key = getattr(translator, "_handle_key", None)
    if check_type is None or handle_key is None or getattr(translator, "_ssc_lazy", False):
        return
    from pprint import pformat

    key_tuple = _zcbor_module().KeyTuple

    def _check_type(self: Any, obj: Any) -> None:
        if self.type not in ("OTHER", "GROUP", "UNION"):
            exp_type = self._expected_type()
            if type(obj) not in exp_type:
                self._decode_assert(
                    False, f"{self!s}: Wrong type ({type(obj)}) of {obj!s}, expected {exp_type!s}"
                )

    def _handle_key(self: Any, next_obj: Any) -> Any:
        if not isinstance(next_obj, key_tuple):
            self._decode_assert(False, f"Expected key: {self.key} value=" + pformat(next_obj))
        key, obj = next_obj
        key_res = self.key._decode_single_obj(key)
        obj_res = self._decode_single_obj(obj)
        return key_tuple((key_res if not self.key.is_unambiguous() else None, obj_res))

    translator._check_type = _check_type
    translator._handle_key = _handle_key
    translator._ssc_lazy = True


def _zcbor_module() -> Any:
    import zcbor.zcbor.zcbor as impl

    return impl


def _nodes(root: Any) -> Iterator[Any]:
    """Every parser node under ``root`` (to clear their error lists)."""
    stack, seen = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if isinstance(node.value, list):
            stack.extend(v for v in node.value if hasattr(v, "errors"))
        for attr in ("key", "cbor"):
            child = getattr(node, attr, None)
            if child is not None:
                stack.append(child)


@cache
def _translators() -> tuple[dict[str, Any], list[Any], type[Exception]]:
    zcbor = _zcbor()
    types = zcbor.DataTranslator.from_cddl(cddl_text(), _DEFAULT_MAX_QTY).my_types
    nodes = [n for t in types.values() for n in _nodes(t)]
    return dict(types), nodes, zcbor.CddlValidationError


def _ordered(obj: Any) -> Any:
    """``obj`` with every map in deterministic key order; tags and lists walked."""
    if isinstance(obj, Mapping):
        items = sorted(obj.items(), key=lambda kv: cbor2.dumps(kv[0], canonical=True))
        return {k: _ordered(v) for k, v in items}
    if isinstance(obj, list | tuple):
        return [_ordered(v) for v in obj]
    if isinstance(obj, cbor2.CBORTag):
        return cbor2.CBORTag(obj.tag, _ordered(obj.value))
    return obj


def validate(rule: str, obj: Any) -> None:
    """Raise ``WireError`` unless ``obj`` (a decoded CBOR value) matches ``rule``.

    ``bstr .cbor`` members (the COSE payload and protected header) are decoded by zcbor and
    validated too; their bytes are used as they are.
    """
    types, nodes, validation_error = _translators()
    translator = types.get(rule)
    if translator is None:
        raise KeyError(f"no rule {rule!r} in messages.cddl")
    try:
        translator.validate_obj(_ordered(obj))
    except validation_error as exc:
        raise WireError(f"{rule} does not match messages.cddl: {str(exc)[:200]}") from None
    except (cbor2.CBORError, ValueError, TypeError, KeyError, AttributeError) as exc:
        # zcbor decodes ".cbor" byte strings itself and may trip over garbage inside them
        raise WireError(f"{rule} does not match messages.cddl ({exc.__class__.__name__})") from None
    finally:
        for node in nodes:
            node.errors.clear()
