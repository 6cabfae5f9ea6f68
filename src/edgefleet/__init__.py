"""edgefleet: ship machine-learning models to fleets of edge devices without breaking them.

The package is organised by feature (``registry``, ``store``, ``cli``, ...). Inside each
feature the pure decision code (no I/O) sits in its own modules, and the services that
do I/O call it. See ``docs/architecture.md``.
"""

__version__ = "0.1.0"
