"""Errors of drift monitoring.

Every error the drift feature raises on purpose derives from ``DriftError`` (itself an
``EdgefleetError``, so the CLI prints its message and the API maps its ``code``)::

    from edgefleet.drift.errors import DriftError, SummaryError

    try:
        summary = QuantileSummary.from_text(payload)
    except SummaryError as exc:
        skipped["sketch_invalid"] += 1  # exc.message says why
"""

from __future__ import annotations

from edgefleet.errors import EdgefleetError


class DriftError(EdgefleetError):
    """Base class of drift errors."""

    code = "drift_error"


class SummaryError(DriftError, ValueError):
    """A summary or a set of bins is malformed or does not fit the other side it is
    compared or merged with (garbage bytes, another sketch type, mismatched bin counts,
    the quantile-sketch package missing); the message names why.

    Also a ``ValueError``: a malformed input value is what it is.
    """

    code = "drift_summary_invalid"


class InsufficientDataError(DriftError):
    """There is too little data to compute a statistic (an empty summary or window);
    reported as "insufficient data", never as a made-up number."""

    code = "drift_insufficient_data"


class MonitorError(DriftError):
    """A drift monitor definition is invalid or refers to something that does not exist;
    ``details`` names the field."""

    code = "drift_monitor_invalid"
