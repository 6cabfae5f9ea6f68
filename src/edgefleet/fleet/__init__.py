"""The fleet: devices, their attributes, the twin (desired vs reported state), check-ins,
events, telemetry, and the targeting query language (``region:eu-west AND hw:rev2``).

``versions`` and ``query`` are pure; ``service`` does the I/O through a unit of work.
"""
