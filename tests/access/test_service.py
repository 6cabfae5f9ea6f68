"""The access service: operator keys and their roles, enrollment tokens, the audit log,
on the embedded store (issue #20: tests/access had none)."""

from datetime import UTC, datetime, timedelta

import pytest

from edgefleet.access.errors import ForbiddenError, TokenNotFoundError, UnauthenticatedError
from edgefleet.access.service import Operator
from edgefleet.access.tokens import Role
from edgefleet.config import Settings
from edgefleet.server.context import ServerContext


@pytest.fixture
def access(tmp_path):
    ctx = ServerContext.open(Settings(home=tmp_path / "home", database_url_override=None))
    yield ctx.access
    ctx.close()


def use(access, token):
    with access.uow_factory() as uow:
        group = access.use_enrollment_token(uow, token)
        uow.commit()
    return group


def test_roles_rank_viewer_operator_admin():
    viewer = Operator("k1", "ana", Role.VIEWER)
    viewer.require(Role.VIEWER)
    with pytest.raises(ForbiddenError) as refused:
        viewer.require(Role.OPERATOR)
    assert refused.value.details == {"needed": "operator", "role": "viewer"}
    Operator("k2", "bo", Role.ADMIN).require(Role.OPERATOR)
    assert Operator("k3", "cy", Role.OPERATOR).actor == "cy (k3)"


def test_the_first_admin_key_is_written_once_and_authenticates(access, tmp_path):
    home = tmp_path / "home"
    path = access.bootstrap_admin(home)
    assert path == home / "admin.token" and path.stat().st_mode & 0o777 == 0o600
    assert access.bootstrap_admin(home) is None  # not on a database that has keys
    admin = access.authenticate_operator(path.read_text().strip())
    assert admin.role is Role.ADMIN and admin.name == "bootstrap admin"


def test_keys_by_role_and_revocation(access, tmp_path):
    admin = access.authenticate_operator(
        access.create_api_key(Role.ADMIN, "root", actor=None).token
    )
    operator_key = access.create_api_key(Role.OPERATOR, "ops", actor=admin)
    operator = access.authenticate_operator(operator_key.token)
    assert operator.role is Role.OPERATOR
    # An operator issues viewer and operator keys, never an admin key.
    viewer_key = access.create_api_key(Role.VIEWER, "dash", actor=operator)
    with pytest.raises(ForbiddenError):
        access.create_api_key(Role.ADMIN, "escalation", actor=operator)
    # Revoking an API key takes an admin; a revoked key no longer authenticates.
    with pytest.raises(ForbiddenError):
        access.revoke(viewer_key.token_id, actor=operator)
    assert access.revoke(viewer_key.token_id, actor=admin)["revoked"] is True
    with pytest.raises(UnauthenticatedError, match="unknown or revoked"):
        access.authenticate_operator(viewer_key.token)
    with pytest.raises(TokenNotFoundError):
        access.revoke("efk_nothing", actor=admin)
    # Anything else is no operator: nothing, garbage, a right id with a wrong secret,
    # an enrollment token.
    enrollment = access.create_enrollment_token(
        uses=None, expires_at=None, group=None, actor=operator
    )
    forged = operator_key.token[:-4] + (
        "AAAA" if not operator_key.token.endswith("AAAA") else "BBBB"
    )
    for token in (None, "", "garbage", forged, enrollment.token):
        with pytest.raises(UnauthenticatedError):
            access.authenticate_operator(token)
    listed = {t["id"]: t for t in access.list_tokens(operator)}
    assert listed[viewer_key.token_id]["revoked"] is True
    assert listed[enrollment.token_id]["kind"] == "enrollment"


def test_enrollment_tokens_count_down_expire_and_carry_their_group(access):
    operator = Operator("local", "test", Role.OPERATOR)
    twice = access.create_enrollment_token(uses=2, expires_at=None, group="lab", actor=operator)
    assert use(access, twice.token) == "lab"
    assert use(access, twice.token) == "lab"
    with pytest.raises(UnauthenticatedError, match="used up"):
        use(access, twice.token)
    past = datetime.now(UTC) - timedelta(seconds=1)
    expired = access.create_enrollment_token(uses=None, expires_at=past, group=None, actor=None)
    with pytest.raises(UnauthenticatedError, match="expired"):
        use(access, expired.token)
    revoked = access.create_enrollment_token(uses=None, expires_at=None, group=None, actor=None)
    access.revoke(revoked.token_id, actor=operator)  # an operator may revoke these
    with pytest.raises(UnauthenticatedError, match="revoked"):
        use(access, revoked.token)
    key = access.create_api_key(Role.VIEWER, "not a token", actor=None)
    with pytest.raises(UnauthenticatedError, match="not an enrollment token"):
        use(access, key.token)
    # A failed enrollment consumes no use: the unit of work is not committed.
    once = access.create_enrollment_token(uses=1, expires_at=None, group=None, actor=None)
    with access.uow_factory() as uow:
        access.use_enrollment_token(uow, once.token)  # no commit
    assert use(access, once.token) is None
    # A viewer issues no token.
    with pytest.raises(ForbiddenError):
        access.create_enrollment_token(
            uses=1, expires_at=None, group=None, actor=Operator("v", "v", Role.VIEWER)
        )


def test_the_audit_log_names_who_did_what_and_is_for_admins(access):
    admin = access.authenticate_operator(
        access.create_api_key(Role.ADMIN, "root", actor=None).token
    )
    created = access.create_api_key(Role.VIEWER, "dash", actor=admin)
    access.revoke(created.token_id, actor=admin)
    access.audit(admin, "device.note", "cam-1", {"a": datetime(2026, 1, 1, tzinfo=UTC)}, None)
    entries = access.audit_log(admin, limit=10, offset=0)
    actions = [(e["action"], e["target"], e["actor"]) for e in entries]
    assert ("api_key.create", created.token_id, admin.actor) in actions
    assert ("token.revoke", created.token_id, admin.actor) in actions
    note = next(e for e in entries if e["action"] == "device.note")
    assert note["before"] == {"a": "2026-01-01T00:00:00+00:00"}
    with pytest.raises(ForbiddenError):
        access.audit_log(Operator("k", "ops", Role.OPERATOR), limit=10, offset=0)
