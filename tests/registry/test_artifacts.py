import hashlib
import io

import pytest

from edgefleet.registry.artifacts import CHUNK_SIZE, LocalArtifactStore, sha256_file
from edgefleet.registry.errors import ArtifactHashMismatchError, ArtifactNotFoundError


class CountingReader(io.RawIOBase):
    """A stream that records the largest read asked of it."""

    def __init__(self, data: bytes) -> None:
        self.source = io.BytesIO(data)
        self.largest_read = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.largest_read = max(self.largest_read, size if size >= 0 else 1 << 62)
        return self.source.read(size)


def test_put_open_exists_delete(tmp_path):
    store = LocalArtifactStore(tmp_path)
    data = b"model bytes" * 1000
    digest = hashlib.sha256(data).hexdigest()
    blob = store.put(io.BytesIO(data), expected_sha256=digest)
    assert (blob.sha256, blob.size, blob.created) == (digest, len(data), True)
    assert store.exists(digest) and store.size(digest) == len(data)
    assert store.path(digest) == tmp_path / "sha256" / digest[:2] / digest
    with store.open(digest) as f:
        assert f.read() == data
    again = store.put(io.BytesIO(data))
    assert again.created is False
    assert list(store.digests()) == [digest]
    store.delete(digest)
    assert not store.exists(digest)
    with pytest.raises(ArtifactNotFoundError):
        store.open(digest)
    with pytest.raises(ArtifactNotFoundError):
        store.size(digest)


def test_hash_mismatch_stores_nothing_and_leaves_no_temporary(tmp_path):
    store = LocalArtifactStore(tmp_path)
    with pytest.raises(ArtifactHashMismatchError, match="expected " + "0" * 64):
        store.put(io.BytesIO(b"tampered"), expected_sha256="0" * 64)
    assert list(store.digests()) == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_blobs_are_streamed_in_chunks(tmp_path):
    data = bytes(range(256)) * (3 * CHUNK_SIZE // 256 + 7)
    reader = CountingReader(data)
    calls = []
    blob = LocalArtifactStore(tmp_path).put(reader, progress=calls.append)
    assert blob.size == len(data)
    assert reader.largest_read <= CHUNK_SIZE
    assert sum(calls) == len(data) and len(calls) >= 4


def test_stored_blobs_are_read_only(tmp_path):
    store = LocalArtifactStore(tmp_path)
    blob = store.put(io.BytesIO(b"x"))
    assert store.path(blob.sha256).stat().st_mode & 0o222 == 0


def test_sha256_file_matches_hashlib(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc" * 100000)
    assert sha256_file(path) == (hashlib.sha256(b"abc" * 100000).hexdigest(), 300000)


def test_malformed_digest_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a lowercase hex SHA-256"):
        LocalArtifactStore(tmp_path).exists("../../etc/passwd")
