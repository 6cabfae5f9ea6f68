"""Small TUF files answered from memory are what is on disk now, with the route's headers."""

import os
from pathlib import Path

from starlette.responses import FileResponse

from edgefleet.server.filecache import MEDIA_TYPE, FileCache


def _write(path: Path, data: bytes, mtime_ns: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_a_file_comes_with_the_headers_the_route_would_send(tmp_path: Path):
    _write(tmp_path / "models" / "m.onnx", b"weights", 1_700_000_000_000_000_000)
    cached = FileCache().get(tmp_path, "models/m.onnx")
    assert cached is not None and cached.body == b"weights"
    route = FileResponse(
        tmp_path / "models" / "m.onnx",
        media_type=MEDIA_TYPE,
        stat_result=(tmp_path / "models" / "m.onnx").stat(),
    )
    assert cached.headers == route.raw_headers
    assert (b"accept-ranges", b"bytes") in cached.headers


def test_a_replaced_file_is_read_again_and_a_removed_one_is_not_answered(tmp_path: Path):
    files = FileCache()
    _write(tmp_path / "timestamp.json", b'{"version": 1}', 1_700_000_000_000_000_000)
    first = files.get(tmp_path, "timestamp.json")
    assert first is not None and files.get(tmp_path, "timestamp.json") is first
    # Same size, a later modification time (the TUF refresh rewrites it in place).
    _write(tmp_path / "timestamp.json", b'{"version": 2}', 1_700_000_001_000_000_000)
    second = files.get(tmp_path, "timestamp.json")
    assert second is not None and second.body == b'{"version": 2}'
    assert dict(second.headers)[b"etag"] != dict(first.headers)[b"etag"]
    (tmp_path / "timestamp.json").unlink()
    assert files.get(tmp_path, "timestamp.json") is None
    assert (len(files), files.total) == (0, 0)


def test_only_regular_visible_files_inside_the_directory(tmp_path: Path):
    root = tmp_path / "targets"
    _write(root / "ok.bin", b"x", 1_700_000_000_000_000_000)
    _write(root / ".lock", b"", 1_700_000_000_000_000_000)
    _write(tmp_path / "keys" / "signers.json", b"secret", 1_700_000_000_000_000_000)
    (root / "sub").mkdir()
    files = FileCache()
    for relative in ("../keys/signers.json", "/etc/passwd", ".lock", "sub", "nope", "a\x00b"):
        assert files.get(root, relative) is None, relative
    assert files.get(root, "ok.bin") is not None


def test_large_files_are_left_to_the_route_and_the_total_stays_bounded(tmp_path: Path):
    files = FileCache(max_file=10, max_total=25)
    _write(tmp_path / "big", b"x" * 11, 1_700_000_000_000_000_000)
    assert files.get(tmp_path, "big") is None
    for name in ("a", "b", "c"):
        _write(tmp_path / name, b"y" * 10, 1_700_000_000_000_000_000)
        assert files.get(tmp_path, name) is not None
    # Three of ten bytes do not fit in 25: the least recently used went first.
    assert (len(files), files.total) == (2, 20)
    assert files.get(tmp_path, "b") is not None and files.get(tmp_path, "c") is not None
