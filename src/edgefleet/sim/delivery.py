"""Signed delivery shared by a simulated fleet: real TUF verification, done once.

Every virtual device trusts the same root, so one ``DeliveryClient`` (python-tuf's
ngclient) refreshes the metadata and looks a target up for all of them; each device
still checks the signed custom fields against its own hardware and firmware
(``check_target``). The bytes of each artifact are verified against their signed
length and hashes once per artifact hash, by a real download through the same client;
a device that has received the whole artifact over its own throttled connection
relies on that cached verdict instead of hashing 80 MB again, so the machine's CPU goes
to the fleet, not to re-hashing::

    delivery = SharedDelivery(work_dir, credential)
    delivery.configure(root_bytes, metadata_url, targets_url)
    target = await delivery.lookup(path)          # cached for ``ttl_s``
    await delivery.verify_bytes(target)           # raises DeliveryError if they don't match
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from edgefleet.signing.client import DeliveryClient, VerifiedTarget
from edgefleet.signing.errors import DeliveryError


class SharedDelivery:
    """TUF look-ups and artifact verification for every virtual device of a run.

    Args:
        work_dir: where the shared trusted metadata and verified artifacts are kept.
        credential: a credential the targets route accepts (an operator key or a
            device credential), for the one verifying download per artifact.
        ttl_s: how long a look-up is reused (a revocation shows after at most this).
    """

    def __init__(self, work_dir: Path, credential: str, *, ttl_s: float = 5.0) -> None:
        self.work_dir = work_dir
        self.credential = credential
        self.ttl_s = ttl_s
        self._client: DeliveryClient | None = None
        self._lookups: dict[str, tuple[float, VerifiedTarget | DeliveryError]] = {}
        self._verdicts: dict[str, DeliveryError | None] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.lookups = 0  # real metadata refreshes done
        self.verified_artifacts = 0

    def configure(self, root: bytes, metadata_url: str, targets_url: str) -> None:
        """Trust ``root`` (what enrollment returned); the first call wins."""
        if self._client is not None:
            return
        http = httpx.Client(
            timeout=httpx.Timeout(60.0, connect=10.0),
            headers={"Authorization": f"Bearer {self.credential}"},
        )
        self._client = DeliveryClient(
            self.work_dir / "tuf", metadata_url, targets_url, pinned_root=root, http=http
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.http.close()

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def lookup(self, target_path: str) -> VerifiedTarget:
        """The trusted target at ``target_path`` (shared by every device).

        Raises:
            DeliveryError: as ``DeliveryClient.lookup``.
        """
        client = self._require()
        # One look-up at a time: each refresh writes the shared trusted metadata files.
        async with self._lock("lookup"):
            cached = self._lookups.get(target_path)
            if cached is None or cached[0] < time.monotonic():
                try:
                    value: VerifiedTarget | DeliveryError = await asyncio.to_thread(
                        client.lookup, target_path
                    )
                except DeliveryError as exc:
                    value = exc
                self.lookups += 1
                cached = (time.monotonic() + self.ttl_s, value)
                self._lookups[target_path] = cached
        if isinstance(cached[1], DeliveryError):
            raise cached[1]
        return cached[1]

    async def verify_bytes(self, target: VerifiedTarget) -> None:
        """Check the artifact's bytes against its signed length and hashes, once per
        artifact hash.

        Raises:
            DeliveryError: the served bytes do not match (or could not be fetched).
        """
        client = self._require()
        sha = target.sha256
        async with self._lock(f"verify:{sha}"):
            if sha not in self._verdicts:
                dest = self.work_dir / "verified" / sha
                try:
                    await asyncio.to_thread(client.download, target, dest)
                    self._verdicts[sha] = None
                    self.verified_artifacts += 1
                except DeliveryError as exc:
                    if exc.transient:
                        raise  # not a verdict on the bytes: the next device tries again
                    self._verdicts[sha] = exc
        verdict = self._verdicts[sha]
        if verdict is not None:
            raise verdict

    def _require(self) -> DeliveryClient:
        if self._client is None:
            raise RuntimeError("SharedDelivery.configure must be called first")
        return self._client
