"""Who may call what: every route of the app, called with every kind of credential.

``ROUTES`` gives each route of the app its access class (docs/security.md, "Who may
call what"). The first test compares it with the app's route table, so a new route
fails it until it has a row, and a row whose route went away fails it too. The matrix
test then makes the real request to a running server (``serve`` of conftest.py) for
every row and every kind of credential: a device's own requests with valid bodies are
answered by the device fast path (server/hotpath.py), everything else by the routes.
It checks the answer:

- denied: 401 (no, malformed, revoked or replaced credential, or one of the wrong kind)
  or 403 (authenticated but not allowed: another device, too low a role), in the error
  envelope;
- admitted: anything but 401, 403 or a 5xx (a 404, 409 or 422 proves authorization passed).

Each row that names something (a path parameter; the device id an enrollment asks for)
runs twice: with ids that exist and with ids that do not. A denied caller gets the same
answer both times, so it never learns what exists.

Bodies are valid, so that the answers are about authorization: the device routes
validate their body before they look at the credential (it is checked inside the
route, not by a dependency), so there a bad body without a credential is answered 422,
not 401. That says nothing about what exists; the operator routes check the key first.
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefleet.access.tokens import Role
from edgefleet.config import Settings
from edgefleet.server.app import create_api
from tests.server.conftest import serve


class Access(StrEnum):
    """Who may call a route."""

    PUBLIC = "public"
    ENROLLMENT = "enrollment token, in the body"
    OWN_DEVICE = "the device's own credential"
    DEVICE_OR_OPERATOR = "any enrolled device or any operator key"
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


class Kind(StrEnum):
    """The credential a request carries (``Authorization: Bearer``)."""

    NONE = "no credential"
    GARBAGE = "garbage"
    REVOKED_KEY = "revoked admin key"
    ENROLLMENT = "enrollment token"
    REVOKED_ENROLLMENT = "revoked enrollment token"
    REPLACED_DEVICE = "replaced device credential"
    OTHER_DEVICE = "another device's credential"
    OWN_DEVICE = "own device credential"
    VIEWER = "viewer key"
    OPERATOR = "operator key"
    ADMIN = "admin key"


ROLE_OF = {Kind.VIEWER: Role.VIEWER, Kind.OPERATOR: Role.OPERATOR, Kind.ADMIN: Role.ADMIN}
DEVICE_KINDS = {Kind.OWN_DEVICE, Kind.OTHER_DEVICE}


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    access: Access
    json: Any = None
    params: dict[str, str] | None = None
    content: bytes | None = None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


NOW = datetime.now(UTC).isoformat()
DESIRED = {"model": "digits", "version": "1.0.0"}
ROLLOUT = {"model": "digits", "version": "1.0.0", "target": "region:nowhere"}

ROUTES = [
    Row("GET", "/healthz", Access.PUBLIC),
    Row("GET", "/readyz", Access.PUBLIC),
    Row("GET", "/metrics", Access.PUBLIC),
    Row("GET", "/openapi.json", Access.PUBLIC),
    Row("GET", "/docs", Access.PUBLIC),
    Row("GET", "/docs/oauth2-redirect", Access.PUBLIC),
    Row("GET", "/redoc", Access.PUBLIC),
    Row("GET", "/tuf/metadata/{path:path}", Access.PUBLIC),
    Row("GET", "/tuf/targets/{path:path}", Access.DEVICE_OR_OPERATOR),
    # The body, with the credential under test as its enrollment token, is made below.
    Row("POST", "/api/v1/enroll", Access.ENROLLMENT),
    Row("GET", "/api/v1/devices/{device_id}/desired", Access.OWN_DEVICE),
    Row("PUT", "/api/v1/devices/{device_id}/reported", Access.OWN_DEVICE, {"agent_state": "idle"}),
    Row(
        "POST",
        "/api/v1/devices/{device_id}/events",
        Access.OWN_DEVICE,
        {"events": [{"seq": 1, "reason": "matrix", "at": NOW}]},
    ),
    Row(
        "POST",
        "/api/v1/devices/{device_id}/telemetry",
        Access.OWN_DEVICE,
        {"samples": [{"at": NOW}]},
    ),
    Row("GET", "/api/v1/devices", Access.VIEWER),
    Row("GET", "/api/v1/devices/{device_id}", Access.VIEWER),
    Row("PUT", "/api/v1/devices/{device_id}/desired", Access.OPERATOR, DESIRED),
    Row("POST", "/api/v1/fleet/desired", Access.OPERATOR, {"query": "id:nobody", "model": None}),
    Row("POST", "/api/v1/devices/{device_id}/reenroll", Access.OPERATOR),
    Row(
        "PATCH",
        "/api/v1/devices/{device_id}/attributes",
        Access.OPERATOR,
        {"attributes": {"cohort": "matrix"}},
    ),
    Row("GET", "/api/v1/fleet/summary", Access.VIEWER),
    # An enrollment token: creating or revoking API keys needs admin beyond the route's role.
    Row("POST", "/api/v1/tokens", Access.OPERATOR, {"kind": "enrollment", "uses": 1}),
    Row("GET", "/api/v1/tokens", Access.OPERATOR),
    Row("DELETE", "/api/v1/tokens/{token_id}", Access.OPERATOR),
    Row("GET", "/api/v1/audit", Access.ADMIN),
    # Not a bundle (an admitted caller gets 422): the key is checked before the upload.
    Row("POST", "/api/v1/models", Access.OPERATOR, content=b"not a bundle"),
    Row("GET", "/api/v1/models", Access.VIEWER),
    Row("GET", "/api/v1/models/{name}/versions/{version}", Access.VIEWER),
    Row("GET", "/api/v1/models/{name}/latest", Access.VIEWER),
    Row(
        "GET",
        "/api/v1/models/{name}/compare",
        Access.VIEWER,
        params={"a": "1.0.0", "b": "1.0.0"},
    ),
    Row(
        "POST",
        "/api/v1/models/{name}/versions/{version}/promote",
        Access.OPERATOR,
        {"stage": "production"},
    ),
    Row("GET", "/api/v1/models/{name}/history", Access.VIEWER),
    Row("POST", "/api/v1/rollouts", Access.OPERATOR, ROLLOUT, params={"start": "false"}),
    Row("GET", "/api/v1/rollouts", Access.VIEWER),
    Row("GET", "/api/v1/rollouts/{rollout_id}", Access.VIEWER),
    Row("GET", "/api/v1/rollouts/{rollout_id}/devices", Access.VIEWER),
    Row("GET", "/api/v1/rollouts/{rollout_id}/log", Access.VIEWER),
    Row("POST", "/api/v1/rollouts/{rollout_id}/start", Access.OPERATOR),
    Row("POST", "/api/v1/rollouts/{rollout_id}/pause", Access.OPERATOR, {"reason": "matrix"}),
    Row("POST", "/api/v1/rollouts/{rollout_id}/resume", Access.OPERATOR),
    Row("POST", "/api/v1/rollouts/{rollout_id}/approve", Access.OPERATOR),
    Row("POST", "/api/v1/rollouts/{rollout_id}/abort", Access.OPERATOR, {"revert": False}),
    Row("POST", "/api/v1/webhooks", Access.ADMIN, {"url": "http://127.0.0.1:9/matrix"}),
    Row("GET", "/api/v1/webhooks", Access.ADMIN),
    Row("PUT", "/api/v1/drift/monitors/{model}", Access.OPERATOR, {"model": "digits"}),
    Row("GET", "/api/v1/drift/monitors", Access.VIEWER),
    Row("GET", "/api/v1/drift/monitors/{model}", Access.VIEWER),
    Row("GET", "/api/v1/drift/status", Access.VIEWER),
    Row("GET", "/api/v1/drift/report", Access.VIEWER, params={"model": "digits", "last": "1h"}),
    Row("GET", "/api/v1/drift/alarms", Access.VIEWER),
    Row("GET", "/api/v1/drift/alarms/{alarm_id}", Access.VIEWER),
    Row("POST", "/api/v1/drift/alarms/{alarm_id}/ack", Access.OPERATOR),
    Row("POST", "/api/v1/drift/alarms/{alarm_id}/resolve", Access.OPERATOR),
]

PLACEHOLDER = re.compile(r"\{(\w+)(?::\w+)?\}")


def expected_denial(access: Access, kind: Kind, exists: bool) -> int | None:
    """The status a request is denied with, or None if it is admitted."""
    if access is Access.PUBLIC:
        return None
    if access is Access.ENROLLMENT:
        return None if kind is Kind.ENROLLMENT else 401
    if access is Access.OWN_DEVICE:
        if kind is Kind.OWN_DEVICE:
            # A device id nobody has is another device's as far as a credential goes.
            return None if exists else 403
        return 403 if kind is Kind.OTHER_DEVICE else 401
    if access is Access.DEVICE_OR_OPERATOR:
        return None if kind in DEVICE_KINDS or kind in ROLE_OF else 401
    role = ROLE_OF.get(kind)
    if role is None:
        return 401
    return None if role.allows(Role(access.value)) else 403


@dataclass(frozen=True)
class Ids:
    """What the path parameters name (and the device id an enrollment asks for)."""

    device_id: str
    enroll_device_id: str
    rollout_id: str
    name: str
    version: str
    token_id: str
    metadata: str
    target: str
    model: str
    alarm_id: str


@dataclass
class World:
    http: httpx.Client
    credentials: dict[Kind, str | None]
    existing: Ids
    missing: Ids
    replaced_device_id: str


def _bundle_archive(bundle: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(bundle, arcname=bundle.name)
    return buffer.getvalue()


def _drift_alarm(settings: Settings) -> str:
    """An open drift alarm in the store (acknowledged and resolved by the matrix's
    admitted callers, which then answer 409: authorization passed)."""
    from sqlalchemy.orm import sessionmaker

    from edgefleet.drift.alarms import Alarm, AlarmState, Finding, Fired
    from edgefleet.store.bootstrap import open_store  # noqa: F401 - the schema is current
    from edgefleet.store.database import describe_url, make_engine
    from edgefleet.store.drift import SqlDriftUnitOfWork

    at = datetime.now(UTC)
    fired = Fired(statistic="psi", value=0.5, threshold=0.2, p_value=1e-9, bh_cut=1e-3)
    finding = Finding(
        model="digits",
        version="1.0.0",
        segment="all",
        feature="X[3]",
        fired=(fired,),
        rows=500,
        devices=5,
        phi=1.0,
    )
    alarm = Alarm(
        id="da-0123456789ab",
        state=AlarmState.OPEN,
        opened_at=at,
        opening=finding,
        latest=finding,
        last_seen_at=at,
        last_look_at=at,
    )
    engine = make_engine(settings)
    try:
        sessions = sessionmaker(engine, expire_on_commit=False)
        with SqlDriftUnitOfWork(sessions, describe_url(engine)) as uow:
            uow.drift.save_alarms([alarm], at)
            uow.commit()
    finally:
        engine.dispose()
    return alarm.id


def _small_target(targets: Path) -> str:
    """A target the fast path serves from memory (a profile, a few KiB)."""
    profile = next(p for p in sorted(targets.rglob("*profile.json")) if p.is_file())
    return profile.relative_to(targets).as_posix()


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, example_bundles: dict[str, Path]
) -> Iterator[World]:
    home = tmp_path_factory.mktemp("matrix") / "home"
    settings = Settings(home=home, database_url_override=None, db_busy_timeout_s=0.2)
    with serve(settings) as (url, _), httpx.Client(base_url=url, timeout=30) as client:
        admin = (home / "admin.token").read_text().strip()

        def call(method: str, path: str, token: str | None = admin, **kwargs: Any) -> Any:
            headers = dict(kwargs.pop("headers", {}))
            if token:
                headers["Authorization"] = f"Bearer {token}"
            response = client.request(method, path, headers=headers, **kwargs)
            assert response.status_code < 300, f"{method} {path}: {response.text}"
            return response.json()

        def token(**body: Any) -> tuple[str, str]:
            made = call("POST", "/api/v1/tokens", json=body)
            return made["token"], made["id"]

        def enroll(device_id: str) -> str:
            body = {
                "device_id": device_id,
                "enrollment_token": token(kind="enrollment")[0],
                "attributes": {"hw": "x86_64", "firmware": "2.0.0"},
            }
            return str(call("POST", "/api/v1/enroll", None, json=body)["credential"])

        call(
            "POST",
            "/api/v1/models",
            content=_bundle_archive(example_bundles["1.0.0"]),
            headers={"Content-Type": "application/gzip"},
        )
        own, other = enroll("matrix-device"), enroll("matrix-other")
        enroll("matrix-enrolled")
        replaced = enroll("matrix-replaced")
        # Seen once, so the fast path's check-in cache holds the row before it changes.
        desired = client.get(
            "/api/v1/devices/matrix-replaced/desired",
            headers={"Authorization": f"Bearer {replaced}"},
        )
        assert desired.status_code == 200, desired.text
        call("POST", "/api/v1/devices/matrix-replaced/reenroll")
        enroll("matrix-replaced")
        revoked_key, revoked_key_id = token(kind="api_key", role="admin", name="revoked")
        call("DELETE", f"/api/v1/tokens/{revoked_key_id}")
        revoked_enrollment, revoked_enrollment_id = token(kind="enrollment")
        call("DELETE", f"/api/v1/tokens/{revoked_enrollment_id}")
        # Revoked again and again by the admitted callers of DELETE /api/v1/tokens/{id}.
        _, throwaway_id = token(kind="enrollment")
        rollout = call("POST", "/api/v1/rollouts", json=ROLLOUT, params={"start": "false"})
        credentials: dict[Kind, str | None] = {
            Kind.NONE: None,
            Kind.GARBAGE: "garbage",
            Kind.REVOKED_KEY: revoked_key,
            Kind.ENROLLMENT: token(kind="enrollment")[0],
            Kind.REVOKED_ENROLLMENT: revoked_enrollment,
            Kind.REPLACED_DEVICE: replaced,
            Kind.OTHER_DEVICE: other,
            Kind.OWN_DEVICE: own,
            Kind.VIEWER: token(kind="api_key", role="viewer", name="viewer")[0],
            Kind.OPERATOR: token(kind="api_key", role="operator", name="operator")[0],
            Kind.ADMIN: admin,
        }
        existing = Ids(
            device_id="matrix-device",
            enroll_device_id="matrix-enrolled",
            rollout_id=rollout["id"],
            name="digits",
            version="1.0.0",
            token_id=throwaway_id,
            metadata="1.root.json",
            target=_small_target(home / "tuf" / "targets"),
            model="digits",
            alarm_id=_drift_alarm(settings),
        )
        missing = Ids(
            device_id="no-such-device",
            enroll_device_id="matrix-new-device",
            rollout_id="ro-000000000000",
            name="no-such-model",
            version="9.9.9",
            token_id="0123456789abcdef",
            metadata="999.root.json",
            target="models/no-such-model/1.0.0/profile.json",
            model="no-such-model",
            alarm_id="da-000000000000",
        )
        yield World(client, credentials, existing, missing, "matrix-replaced")


def test_the_table_has_a_row_for_every_route_and_a_route_for_every_row(tmp_path: Path):
    app = create_api(Settings(home=tmp_path, database_url_override=None))  # not started
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # before FastAPI 0.165 included routers are flat in app.routes
        routes: list[Any] = list(app.routes)
    else:
        routes = list(iter_route_contexts(app.routes))
    in_app = {
        (method, route.path)
        for route in routes
        for method in getattr(route, "methods", None) or ()
        if method != "HEAD"  # Starlette's own routes answer HEAD as GET
    }
    in_table = {(row.method, row.path) for row in ROUTES}
    assert len(in_table) == len(ROUTES), "a route has two rows"
    without_row = sorted(f"{m} {p}" for m, p in in_app - in_table)
    without_route = sorted(f"{m} {p}" for m, p in in_table - in_app)
    assert not (without_row or without_route), (
        f"routes without a row in ROUTES (add one with its access class): {without_row}; "
        f"rows in ROUTES whose route is gone: {without_route}"
    )


def _cases() -> Iterator[Any]:
    for row in ROUTES:
        variants = (
            [True, False]
            if PLACEHOLDER.search(row.path) or row.access is Access.ENROLLMENT
            else [True]
        )
        for exists in variants:
            for kind in Kind:
                label = f"{row} by {kind}" + ("" if exists else ", missing ids")
                yield pytest.param(row, kind, exists, id=label)


def _request(world: World, row: Row, kind: Kind, exists: bool) -> Any:
    ids = world.existing if exists else world.missing
    if kind is Kind.REPLACED_DEVICE and exists:
        # The replaced credential is tried on its own device's routes.
        ids = replace(ids, device_id=world.replaced_device_id)
    credential = world.credentials[kind]
    values = {
        "device_id": ids.device_id,
        "rollout_id": ids.rollout_id,
        "name": ids.name,
        "version": ids.version,
        "token_id": ids.token_id,
        "model": ids.model,
        "alarm_id": ids.alarm_id,
        "path": ids.target if row.path.startswith("/tuf/targets/") else ids.metadata,
    }
    unknown = [name for name in PLACEHOLDER.findall(row.path) if name not in values]
    assert not unknown, f"{row}: no id for {unknown}; add one to Ids and to values here"
    path = PLACEHOLDER.sub(lambda match: values[match[1]], row.path)
    body = row.json
    if row.access is Access.ENROLLMENT:
        # The token is a required field, so "no credential" is a body whose token is none.
        body = {
            "device_id": ids.enroll_device_id,
            "enrollment_token": credential or "none",
            "attributes": {"hw": "x86_64"},
        }
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    return world.http.request(
        row.method, path, headers=headers, json=body, params=row.params, content=row.content
    )


@pytest.mark.parametrize(("row", "kind", "exists"), list(_cases()))
def test_access(world: World, row: Row, kind: Kind, exists: bool):
    response = _request(world, row, kind, exists)
    denial = expected_denial(row.access, kind, exists)
    where = f"{row} ({row.access}) by {kind}: {response.status_code} {response.text[:300]}"
    if denial is None:
        assert response.status_code not in (401, 403), f"refused: {where}"
        assert response.status_code < 500, f"server error: {where}"
        return
    assert response.status_code == denial, f"expected {denial}: {where}"
    error = response.json()["error"]
    assert error["code"] == ("unauthenticated" if denial == 401 else "forbidden"), where
    assert isinstance(error["message"], str) and error["message"], where
    if denial == 401:
        assert response.headers["www-authenticate"] == "Bearer", where
