"""FastAPI's own OpenTelemetry instrumentation follows whether OpenTelemetry is set up."""

from opentelemetry import trace

from edgefleet.server import app as server_app


def test_off_without_a_provider_on_with_one(monkeypatch):
    assert server_app._native_telemetry() == {
        "telemetry": {"tracing": False, "metrics": False, "logs": False}
    }

    class SiteTracerProvider(trace.TracerProvider):
        def get_tracer(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return trace.NoOpTracer()

    monkeypatch.setattr(trace, "get_tracer_provider", lambda: SiteTracerProvider())
    assert server_app._native_telemetry() == {}  # FastAPI's defaults: all on
