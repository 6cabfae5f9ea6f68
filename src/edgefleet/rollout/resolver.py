"""Which signed artifact a device of a rollout gets, resolved through a short-lived cache.

Resolving reads the registry and the signed metadata. That must not happen inside the
controller's write transaction (SQLite allows one writer), so each tick resolves what
it will need first and the write transaction finds it here. A release that cannot be
delivered (unknown version, no variant for the hardware) is remembered as such too; a
transient error (a busy database) is not, so the next tick asks again::

    resolver = CachedResolver(context.resolve_model)
    resolver.warm("digits", "1.1.0", "rev2")  # outside the transaction
    resolver("digits", "1.1.0", "rev2")  # inside it: from the cache
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from edgefleet.errors import EdgefleetError
from edgefleet.fleet.domain import DesiredModel

#: How long a resolved artifact (or the error resolving it) is reused.
RESOLVE_TTL_S = 10.0
#: (model, version, hardware) -> the signed artifact for a device of that hardware.
ModelResolver = Callable[[str, str, str | None], DesiredModel]
_Key = tuple[str, str, str | None]


class CachedResolver:
    """``resolve`` with each answer (or permanent error) kept for ``ttl_s``."""

    def __init__(
        self,
        resolve: ModelResolver,
        ttl_s: float = RESOLVE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resolve = resolve
        self.ttl_s = ttl_s
        self.clock = clock
        self._kept: dict[
            tuple[str, str, str | None], tuple[float, DesiredModel | EdgefleetError]
        ] = {}

    def __call__(self, model: str, version: str, hardware: str | None) -> DesiredModel:
        """The artifact for ``hardware``.

        Raises:
            EdgefleetError: it cannot be resolved (kept when not ``transient``).
        """
        key = (model, version, hardware)
        now = self.clock()
        kept = self._kept.get(key)
        if kept is None or kept[0] < now:
            value: DesiredModel | EdgefleetError
            try:
                value = self.resolve(model, version, hardware)
            except EdgefleetError as exc:
                if exc.transient:
                    raise  # not remembered: the next tick asks again
                value = exc
            kept = (now + self.ttl_s, value)
            self._kept[key] = kept
        if isinstance(kept[1], EdgefleetError):
            raise kept[1]
        return kept[1]

    def warm(self, model: str, version: str, hardware: str | None) -> None:
        """Resolve now (outside a write transaction), whatever the answer."""
        with contextlib.suppress(EdgefleetError):
            self(model, version, hardware)
