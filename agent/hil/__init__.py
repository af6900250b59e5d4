"""Support for the field engineers' hardware-in-the-loop suite (``hil_tests/``, DESIGN §9).

``atrs`` (the known-ATR table), ``guard`` (the test-card allow-list every card write passes),
``prompts`` (engineer prompts, or simulator controls under ``--sim``), ``report`` (results,
inventory, timings, the human report) and ``simterm`` (the whole simulated terminal for
``--sim``: private pcscd with vpcd, ``sim up``, TLS mosquitto and the reference central).
"""
