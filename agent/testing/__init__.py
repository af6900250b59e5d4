"""Fixtures shared by tests/, hil_tests/ and bench/: real services on free ports.

These start real programs (mosquitto, pcscd) that the Makefile installs; they install nothing.
They live in the package because the HIL suite and the benchmarks use them as well as tests.
"""
