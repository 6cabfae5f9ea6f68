"""A ``tuf.ngclient`` fetcher on httpx, so metadata and targets share one HTTP client
(its timeouts, proxies and the device's credentials)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
from tuf.api.exceptions import DownloadError, DownloadHTTPError
from tuf.ngclient import FetcherInterface

CHUNK_SIZE = 64 * 1024


class HttpxFetcher(FetcherInterface):
    """Streams a URL with an ``httpx.Client``; HTTP errors become ``DownloadHTTPError``."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def _fetch(self, url: str) -> Iterator[bytes]:
        # Open the response before returning, so HTTP errors surface from fetch().
        request = self.client.build_request("GET", url)
        try:
            response = self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise DownloadError(f"cannot fetch {url}: {exc}") from exc
        if response.status_code != httpx.codes.OK:
            response.close()
            raise DownloadHTTPError(
                f"{url} answered HTTP {response.status_code}", response.status_code
            )
        return self._chunks(response, url)

    @staticmethod
    def _chunks(response: httpx.Response, url: str) -> Iterator[bytes]:
        try:
            yield from response.iter_bytes(CHUNK_SIZE)
        except httpx.HTTPError as exc:
            raise DownloadError(f"download of {url} was interrupted: {exc}") from exc
        finally:
            response.close()
