"""Signed delivery with The Update Framework (python-tuf).

Server side, ``keys`` manages the role keys by securesystemslib signer URI,
``repository`` maintains the TUF repository (root, targets with hashed-bin delegation
once it grows, snapshot, timestamp) and ``publish`` turns registered model versions
into signed targets with the custom fields devices enforce.

Device side, ``client`` refreshes metadata with ``tuf.ngclient``, checks a target's
signed custom fields against the device (``policy``: hardware, firmware, revocation,
release floor) and downloads it resumably into a caller-given file, verified by
length and hashes. The device-side modules (``client``, ``fetcher``, ``policy``,
``layout``, ``errors``) import nothing from the server::

    client = DeliveryClient(state_dir / "tuf", base_url + "/tuf/metadata/",
                            base_url + "/tuf/targets/", pinned_root=root_bytes)
    target = client.resolve("models/digits/1.1.0/onnx-fp32/model-fp32.onnx", device)
    client.download(target, slot_dir / "model.onnx")
"""
