"""What every fuzz target shares: the invariant check, atheris or the plain driver.

A target module defines

* ``SEEDS``: valid (or interesting) inputs the mutations start from;
* ``DICTIONARY``: byte tokens worth inserting (tags, status words, keywords);
* ``test_one_input(data: bytes) -> str``: feeds ``data`` to the code under test. It returns an
  *outcome signature* (``"ok"`` or the error code of the allowed error) and raises
  :class:`InvariantViolation` — or lets any unexpected exception escape — when the invariant
  breaks: **parse, or raise the layer's own error; keep serving; lose nothing.**

``main()`` runs the target under atheris (coverage-guided libFuzzer) when it is importable,
else under :func:`fuzz.run.mutation_fuzz` (random stacked mutations with outcome-signature
feedback). Flags: ``-atheris_runs=N`` (both drivers), ``-seed=S``, ``--plain`` (force the
plain driver); other ``-flags`` and corpus directories go to libFuzzer.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

_MASK = re.compile(r"\b[0-9A-Fa-f]{2,}\b|\d+")

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "reports" / "fuzz"

try:  # atheris is optional: `pip install atheris` (a binary wheel exists for CPython 3.11)
    import atheris  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - depends on the environment
    atheris = None


class InvariantViolation(AssertionError):  # reads as what it is
    """The code under test broke the target's invariant (not an allowed error)."""


def expect(condition: bool, message: str) -> None:
    """Raise :class:`InvariantViolation` unless ``condition``."""
    if not condition:
        raise InvariantViolation(message)


def outcome(error: BaseException) -> str:
    """The outcome signature of an allowed error: its code and the shape of its message
    (numbers and hex masked), so the plain driver can tell different rejections apart."""
    code = getattr(error, "code", type(error).__name__)
    text = _MASK.sub("#", str(error))[:48]
    return f"{code}:{text}"


def known_bug(error: BaseException, function: str) -> bool:
    """True when ``error`` was raised in ``function`` (the innermost frame) and the run is not
    strict (``FUZZ_STRICT=1``): a bug already reported, counted as its own outcome instead of
    stopping the campaign at the first hit."""
    if os.environ.get("FUZZ_STRICT") == "1":
        return False
    tb = error.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last is not None and last.tb_frame.f_code.co_name == function


def instrumented() -> contextlib.AbstractContextManager[Any]:
    """``with instrumented(): import agent...`` — coverage instrumentation under atheris."""
    script = Path(sys.argv[0]).resolve() if sys.argv else Path()
    # only a target run as a script; not fuzz/run.py (the plain driver) nor an importer
    as_script = script.parent == Path(__file__).parent and script.name != "run.py"
    if atheris is not None and as_script and "--plain" not in sys.argv:
        return atheris.instrument_imports()  # type: ignore[no-any-return]
    return contextlib.nullcontext()


def _flag(argv: Sequence[str], name: str, default: int) -> int:
    for a in argv:
        if a.startswith(f"-{name}="):
            return int(a.split("=", 1)[1])
    return default


@contextlib.contextmanager
def _seed_corpus(seeds: Sequence[bytes]) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="fuzz-seeds-") as d:
        for i, s in enumerate(seeds):
            Path(d, f"seed-{i:04d}").write_bytes(s)
        yield d


def main(
    test_one_input: Callable[[bytes], object],
    seeds: Sequence[bytes],
    dictionary: Sequence[bytes] = (),
    *,
    name: str | None = None,
) -> None:
    """Run the target from the command line (see the module docstring)."""
    argv = list(sys.argv)
    target = name or Path(argv[0]).stem
    runs = _flag(argv, "atheris_runs", _flag(argv, "runs", 10_000))
    if atheris is None or "--plain" in argv:
        from fuzz.run import mutation_fuzz, print_stats

        stats = mutation_fuzz(
            target,
            test_one_input,
            seeds,
            dictionary,
            runs=runs,
            seed=_flag(argv, "seed", 0),
            max_len=_flag(argv, "max_len", 4096),
        )
        print_stats(stats)
        sys.exit(1 if stats.failures else 0)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    passthrough = [a for a in argv[1:] if a != "--plain"]
    has_corpus = any(not a.startswith("-") for a in passthrough)
    with _seed_corpus(seeds) as corpus:
        args = [argv[0], f"-artifact_prefix={ARTIFACTS}/{target}-", *passthrough]
        if not any(a.startswith("-max_len=") for a in passthrough):
            args.append("-max_len=4096")
        if not has_corpus:
            args.append(corpus)
        # libFuzzer keeps reading a corpus dir; it is only a seed source here.
        os.environ.setdefault("ATHERIS_TARGET", target)

        def one(data: bytes) -> None:
            test_one_input(data)

        atheris.Setup(args, one)
        atheris.Fuzz()
