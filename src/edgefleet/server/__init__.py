"""The control-plane server: FastAPI routes over the services, and nothing else.

``create_app(settings)`` builds the ASGI app; ``edgefleet server`` runs it on uvicorn.
Routes parse, call one service, and format; errors raised by services become the JSON
envelope ``{"error": {"code", "message", "details"}}`` with the matching status.
"""
