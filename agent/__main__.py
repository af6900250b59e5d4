"""``python -m agent`` is ``ssc-agent``."""

from agent.cli import entry

entry()
