"""The root of every error edgefleet raises on purpose.

Each feature defines its own subclasses (``edgefleet.registry.errors``, ...). An
``EdgefleetError`` carries a stable machine-readable ``code``, a message a person can act
on, and optional structured ``details``; the CLI prints the message and exits non-zero,
the API (later) maps it to ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

from typing import Any


class EdgefleetError(Exception):
    """Base class of all expected edgefleet errors."""

    code: str = "edgefleet_error"
    #: The same call may succeed if tried again later (a busy or unreachable database,
    #: a concurrent change): no reason to give up on what was asked.
    transient: bool = False

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    def to_dict(self) -> dict[str, Any]:
        """The error as the JSON object the CLI and the API emit."""
        return {"code": self.code, "message": self.message, "details": self.details}


class ConfigError(EdgefleetError):
    """A setting is missing or malformed."""

    code = "config_error"


class MissingDependencyError(EdgefleetError):
    """An optional extra is needed for this operation but is not installed."""

    code = "missing_dependency"

    @classmethod
    def for_extra(cls, extra: str, module: str) -> MissingDependencyError:
        return cls(
            f"this needs the '{extra}' extra ({module} is not installed): "
            f"pip install 'edgefleet[{extra}]'",
            details={"extra": extra, "module": module},
        )
