"""The plain mutation driver, and ``run all`` (used where atheris is not installed, and for the
recorded campaign counts in docs/RELIABILITY.md).

    python fuzz/run.py card_tlv -runs=100000 [-seed=1]     # one target
    python fuzz/run.py all -runs=100000 --json             # every target, one JSON summary

The driver keeps a corpus (the target's seeds at first), picks a parent, applies 1–4 stacked
mutations (bit flip, interesting byte, insert/delete/duplicate a range, dictionary token,
splice with another corpus entry, truncate), runs the target, and keeps the input when it
produced an outcome signature not seen before (the target returns ``"ok"`` or the error code
it raised) — a crude stand-in for coverage feedback. An input that breaks the invariant is
saved under ``reports/fuzz/<target>-crash-<sha1>`` with its traceback.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import random
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGETS = (
    "card_tlv",
    "card_atr",
    "card_sw",
    "card_records",
    "card_read_flow",
    "api_frames",
    "mqtt_commands",
    "config_parse",
)
INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0x81, 0x82, 0x83, 0x84, 0xFE, 0xFF)
ARTIFACTS = Path(__file__).resolve().parents[1] / "reports" / "fuzz"


@dataclass
class Stats:
    target: str
    driver: str = "plain-mutation"
    runs: int = 0
    seconds: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    corpus: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.runs / self.seconds if self.seconds else 0.0


def mutate(
    data: bytes,
    rng: random.Random,
    dictionary: Sequence[bytes],
    corpus: Sequence[bytes],
    max_len: int,
) -> bytes:
    """1–4 stacked random mutations of ``data``."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(10)
        n = len(buf)
        if op == 0 and n:  # flip a bit
            i = rng.randrange(n)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # interesting byte
            buf[rng.randrange(n)] = rng.choice(INTERESTING)
        elif op == 2 and n:  # random byte
            buf[rng.randrange(n)] = rng.randrange(256)
        elif op == 3:  # insert random bytes
            i = rng.randrange(n + 1)
            buf[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 4 and n:  # delete a range
            i = rng.randrange(n)
            del buf[i : i + rng.randint(1, max(1, min(16, n - i)))]
        elif op == 5 and n:  # duplicate a range
            i = rng.randrange(n)
            j = min(n, i + rng.randint(1, 16))
            k = rng.randrange(n + 1)
            buf[k:k] = buf[i:j]
        elif op == 6 and dictionary:  # dictionary token
            tok = rng.choice(dictionary)
            i = rng.randrange(n + 1)
            if rng.random() < 0.5:
                buf[i:i] = tok
            else:
                buf[i : i + len(tok)] = tok
        elif op == 7 and corpus:  # splice
            other = rng.choice(corpus)
            if other:
                i = rng.randrange(n + 1)
                j = rng.randrange(len(other))
                buf = buf[:i] + bytearray(other[j:])
        elif op == 8 and n:  # truncate
            del buf[rng.randrange(n) :]
        elif op == 9 and n >= 2:  # add/subtract on a byte (lengths, counters)
            i = rng.randrange(n)
            buf[i] = (buf[i] + rng.choice((-2, -1, 1, 2, 16, -16))) & 0xFF
    return bytes(buf[:max_len])


def _save(target: str, data: bytes, tb: str) -> str:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(data).hexdigest()  # noqa: S324  # a file name, not security
    path = ARTIFACTS / f"{target}-crash-{digest}"
    path.write_bytes(data)
    path.with_suffix(".txt").write_text(tb, encoding="utf-8")
    return str(path)


def mutation_fuzz(
    target: str,
    test_one_input: Callable[[bytes], object],
    seeds: Sequence[bytes],
    dictionary: Sequence[bytes] = (),
    *,
    runs: int = 10_000,
    seed: int = 0,
    max_len: int = 4096,
    max_failures: int = 5,
) -> Stats:
    """Run ``runs`` mutated inputs through the target; see the module docstring."""
    rng = random.Random(seed)  # noqa: S311  # reproducible fuzzing, not cryptography
    corpus: list[bytes] = list(seeds) or [b""]
    seen: set[str] = set()
    stats = Stats(target)
    t0 = time.perf_counter()
    for i in range(runs):
        # every seed once first, then mutations
        data = (
            corpus[i]
            if i < len(seeds)
            else mutate(rng.choice(corpus), rng, dictionary, corpus, max_len)
        )
        try:
            outcome = str(test_one_input(data))
        except Exception:  # noqa: BLE001  # the fuzzer's own boundary: record, go on
            tb = traceback.format_exc()
            stats.failures.append(
                {
                    "input": data.hex(),
                    "error": tb.strip().splitlines()[-1],
                    "artifact": _save(target, data, tb),
                }
            )
            outcome = "FAILURE"
            if len(stats.failures) >= max_failures:
                stats.runs = i + 1
                break
        stats.outcomes[outcome] = stats.outcomes.get(outcome, 0) + 1
        if outcome not in seen:
            seen.add(outcome)
            corpus.append(data)
        elif len(corpus) < 2000 and rng.random() < 0.002:
            corpus.append(data)  # keep some diversity without feedback
        stats.runs = i + 1
    stats.seconds = time.perf_counter() - t0
    stats.corpus = len(corpus)
    return stats


def print_stats(stats: Stats, *, as_json: bool = False) -> None:
    d = asdict(stats)
    d["per_second"] = round(stats.per_second, 1)
    d["seconds"] = round(stats.seconds, 2)
    if as_json:
        print(json.dumps(d))
        return
    print(
        f"{stats.target}: {stats.runs} inputs in {stats.seconds:.1f} s "
        f"({stats.per_second:.0f}/s), {len(stats.outcomes)} distinct outcomes, "
        f"{len(stats.failures)} invariant failures",
        file=sys.stderr,
    )
    for f in stats.failures:
        print(f"  FAILURE {f['error']} -> {f['artifact']}", file=sys.stderr)


def load(target: str) -> object:
    return importlib.import_module(f"fuzz.{target}")


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("targets:", ", ".join(TARGETS))
        return 0
    names = list(TARGETS) if argv[0] == "all" else [argv[0]]
    opts = {a.split("=", 1)[0].lstrip("-"): a.split("=", 1)[1] for a in argv[1:] if "=" in a}
    runs = int(opts.get("runs", opts.get("atheris_runs", "10000")))
    seed = int(opts.get("seed", "0"))
    as_json = "--json" in argv
    bad = 0
    summary = []
    for name in names:
        mod = load(name)
        stats = mutation_fuzz(
            name,
            mod.test_one_input,  # type: ignore[attr-defined]
            mod.SEEDS,  # type: ignore[attr-defined]
            getattr(mod, "DICTIONARY", ()),
            runs=runs,
            seed=seed,
        )
        print_stats(stats)
        bad += bool(stats.failures)
        d = asdict(stats)
        d["per_second"] = round(stats.per_second, 1)
        d["seconds"] = round(stats.seconds, 2)
        summary.append(d)
    if as_json:
        print(json.dumps({"runs_per_target": runs, "seed": seed, "targets": summary}))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
