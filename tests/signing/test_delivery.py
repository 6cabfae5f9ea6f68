"""Signed delivery that works: the standard python-tuf client, and edgefleet's device client."""

import functools
import hashlib
import http.server
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tuf.ngclient import Updater

from edgefleet.signing.client import partial_path
from edgefleet.signing.errors import NetworkError, TargetNotFoundError
from edgefleet.signing.layout import ArtifactInfo, parse_custom
from tests.signing.conftest import ARM, X86

FP32 = "models/digits/1.1.0/onnx-fp32/model-fp32.onnx"
INT8 = "models/digits/1.1.0/onnx-int8/model-int8.onnx"


def registry_sha(fleet, version: str, variant: str) -> str:
    return fleet.registry.get("digits", version).variant(variant).sha256


@pytest.fixture
def plain_http_server(fleet):
    """Python's stock static file server over the repository directory."""
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(fleet.repository.root_dir)
    )
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_standard_ngclient_updater_downloads_the_registered_bytes(
    fleet, plain_http_server, tmp_path
):
    # Acceptance: plain python-tuf, a plain static server, the published root.
    metadata_dir = tmp_path / "plain" / "metadata"
    metadata_dir.mkdir(parents=True)
    updater = Updater(
        str(metadata_dir),
        f"{plain_http_server}/metadata/",
        str(tmp_path / "plain"),
        f"{plain_http_server}/targets/",
        bootstrap=fleet.pinned_root,
    )
    updater.refresh()
    info = updater.get_targetinfo(FP32)
    assert info is not None
    path = updater.download_target(info, str(tmp_path / "plain" / "model.onnx"))
    data = Path(path).read_bytes()
    assert hashlib.sha256(data).hexdigest() == registry_sha(fleet, "1.1.0", "onnx-fp32")
    custom = parse_custom(FP32, info.custom)
    assert isinstance(custom, ArtifactInfo)
    assert (custom.model, custom.version, custom.variant, custom.runtime) == (
        "digits",
        "1.1.0",
        "onnx-fp32",
        "onnxruntime",
    )
    assert custom.release == 2 and custom.firmware == ">=1.0"
    assert custom.hardware == ("x86_64", "aarch64")


def test_releases_increase_per_model(fleet):
    assert fleet.publisher.releases("digits") == {"1.0.0": 1, "1.1.0": 2}
    again = fleet.publisher.publish(fleet.registry.get("digits", "1.0.0"))
    assert (again.release, again.newly_published) == (1, False)


def test_device_client_resolves_and_downloads_into_the_slot(fleet, tmp_path):
    client = fleet.client()
    target = client.resolve(INT8, ARM)
    assert target.artifact.golden == "models/digits/1.1.0/onnx-int8/golden.npz"
    dest = tmp_path / "slot-b" / "model.onnx"
    seen = []
    client.download(target, dest, progress=seen.append)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == registry_sha(
        fleet, "1.1.0", "onnx-int8"
    )
    assert sum(seen) == target.length
    assert not partial_path(dest, target.sha256).exists()
    golden = client.resolve(target.artifact.golden, ARM)
    client.download(golden, tmp_path / "slot-b" / "golden.npz")
    version = fleet.registry.get("digits", "1.1.0")
    assert golden.sha256 == version.variant("onnx-int8").golden_sha256


def test_interrupted_download_resumes_with_range(fleet, tmp_path):
    client = fleet.client()
    target = client.resolve(FP32, X86)
    url_path = fleet.target_url_path(FP32)
    fleet.server.cut_after[url_path] = 5000
    dest = tmp_path / "slot" / "model.onnx"
    with pytest.raises(NetworkError, match="interrupted at 5000"):
        client.download(target, dest)
    assert not dest.exists()
    assert partial_path(dest, target.sha256).stat().st_size == 5000
    client.download(target, dest)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == target.sha256
    ranges = [r for p, r in fleet.server.requests if p == url_path]
    assert ranges == [None, "bytes=5000-"]


def test_unknown_target(fleet):
    with pytest.raises(TargetNotFoundError, match=r"no signed target models/digits/9.9.9"):
        fleet.client().resolve("models/digits/9.9.9/onnx-fp32/model.onnx", X86)


def test_unreachable_repository(fleet, tmp_path):
    from edgefleet.signing.client import DeliveryClient

    client = DeliveryClient(
        tmp_path / "d",
        "http://127.0.0.1:1/metadata/",
        "http://127.0.0.1:1/targets/",
        pinned_root=fleet.pinned_root,
    )
    with pytest.raises(NetworkError):
        client.resolve(FP32, X86)


def test_hashed_bins_keep_metadata_small(tmp_path, example_bundles, static_server):
    from tests.signing.conftest import make_fleet

    fleet = next(make_fleet(tmp_path, example_bundles, static_server, bins_threshold=4))
    bins = fleet.repository.bins()
    assert bins is not None and bins.number_of_bins >= 4
    top = fleet.repository.targets_role()
    assert top.signed.targets == {}
    assert len(fleet.repository.all_targets()) == 10
    client = fleet.client()
    target = client.resolve(FP32, X86)
    client.download(target, tmp_path / "m.onnx")
    fetched = {p.rsplit("/", 1)[-1] for p, _ in fleet.server.requests if p.startswith("/metadata/")}
    assert any(".bins-" in name for name in fetched)
    # A device fetches only the bins on its paths, not all of them.
    assert sum(".bins-" in n for n in fetched) < bins.number_of_bins
    # Publishing more lands in the existing bins.
    fleet.publisher.revoke("digits", "1.0.0")
    assert fleet.repository.bins().number_of_bins == bins.number_of_bins


def test_device_verifies_without_the_cryptography_package(fleet, tmp_path):
    # securesystemslib verifies ed25519 in pure Python when cryptography is missing,
    # which keeps small devices free of it.
    root = tmp_path / "root.json"
    root.write_bytes(fleet.pinned_root)
    script = f"""
import sys
sys.modules["cryptography"] = None
from pathlib import Path
from edgefleet.signing.client import DeliveryClient
from edgefleet.signing.policy import DeviceFacts
from securesystemslib.signer import _key
assert _key.CRYPTO_IMPORT_ERROR, "cryptography was importable"
client = DeliveryClient(Path({str(tmp_path / "nocrypto")!r}), "{fleet.server.url}/metadata/",
                        "{fleet.server.url}/targets/", pinned_root=Path({str(root)!r}).read_bytes())
target = client.resolve("{INT8}", DeviceFacts("aarch64", "2.0.0"))
print(client.download(target, Path({str(tmp_path / "nocrypto-slot" / "m.onnx")!r})))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    written = (tmp_path / "nocrypto-slot" / "m.onnx").read_bytes()
    assert hashlib.sha256(written).hexdigest() == registry_sha(fleet, "1.1.0", "onnx-int8")


def test_devices_get_the_profile_bins_without_the_servers_reference_summaries(fleet, tmp_path):
    """The registry keeps the reference's quantile summaries for scoring drift; the
    signed profile devices download carries the bins only (and reads as a profile)."""
    import json

    from edgefleet.registry.profile import ReferenceProfile
    from edgefleet.signing.layout import profile_path

    stored = fleet.registry.get("digits", "1.1.0").reference_profile
    assert stored is not None and stored.sketches
    client = fleet.client()
    target = client.resolve(profile_path("digits", "1.1.0"), X86)
    client.download(target, tmp_path / "profile.json")
    published = json.loads((tmp_path / "profile.json").read_text())
    assert "sketches" not in published
    profile = ReferenceProfile.model_validate(published)
    assert profile.inputs == stored.inputs and profile.sketches == {}
