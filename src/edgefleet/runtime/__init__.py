"""The on-device inference runtime: what applications call to get predictions.

``ModelRuntime`` serves the model in the agent's active slot through a backend (ONNX
Runtime today), swaps models atomically without dropping a request, runs a candidate in
shadow on a sample of requests, and keeps mergeable per-model metrics that the agent
sends as telemetry::

    runtime = ModelRuntime()
    runtime.load(Path("slot-a/model.onnx"), ModelIdentity("digits", "1.0.0", "onnx-fp32"))
    prediction = runtime.predict({"X": batch})
    prediction.outputs["probabilities"], prediction.model.version

``edgefleet agent serve`` exposes the same on a loopback HTTP port. Installs with
``edgefleet[agent]``; imports nothing of the server.
"""
