"""``ssc-agent hil [pytest args]``: the field engineers' hardware-in-the-loop suite (DESIGN §9).

    ssc-agent hil --reader 'ACS ACR39U*' --psam 'ACS ACR39U 01*' --printer /dev/ttyUSB0 \\
                  --broker mqtts://central:8883 --ca ca.pem --cert t.pem --key t.key \\
                  --test-card 320200D156000005AD932A48… --report reports/hil
    ssc-agent hil --sim --non-interactive --report reports/hil     (CI, ``make hil``)
    ssc-agent hil --help                                            (pytest's help: see "hil")

Every argument goes to pytest, which runs ``hil_tests/`` (its plugin, ``hil_tests/conftest.py``,
defines the options and the groups). Afterwards a summary table is printed. Exit 0 when
everything required passed (a skip in a ``--require`` group is a failure), 1 when something
failed, 2 for usage errors (bad options, the suite not found, pytest missing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.cli._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE

SUITE_DIR = "hil_tests"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # prefix_chars "+": every "-x"/"--xyz" argument is passed through to pytest untouched.
    p = subparsers.add_parser(
        "hil",
        help="hardware-in-the-loop suite (pytest args; --sim for the simulated terminal)",
        prefix_chars="+",
        add_help=False,
    )
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="arguments for pytest")
    p.set_defaults(handler=_handler)


def suite_dir() -> Path | None:
    """``hil_tests/`` beside the ``agent`` package: in a checkout (or an editable install), and
    in site-packages when installed from the wheel, which ships the suite (extra ``hil``)."""
    import agent

    candidate = Path(agent.__file__).resolve().parent.parent / SUITE_DIR
    return candidate if (candidate / "conftest.py").is_file() else None


def _handler(args: argparse.Namespace) -> int:
    try:
        import pytest
    except ImportError:
        sys.stderr.write("ssc-agent hil needs pytest: pip install 'ssc-agent[dev]'\n")
        return EXIT_USAGE
    suite = suite_dir()
    if suite is None:
        sys.stderr.write(f"ssc-agent hil: the suite ({SUITE_DIR}/) is not installed here\n")
        return EXIT_USAGE
    from agent.hil.report import last_run, summary_table

    argv = [str(suite), "-p", "no:cacheprovider", *args.pytest_args]
    rc = int(pytest.main(argv))
    run = last_run()
    if run is not None and run.results:
        sys.stdout.write("\n" + summary_table(run))
        sys.stdout.flush()
    if rc == int(pytest.ExitCode.OK):
        return EXIT_OK
    if rc == int(pytest.ExitCode.TESTS_FAILED):
        return EXIT_FAILED
    if rc in (int(pytest.ExitCode.USAGE_ERROR), int(pytest.ExitCode.NO_TESTS_COLLECTED)):
        return EXIT_USAGE
    return EXIT_FAILED
