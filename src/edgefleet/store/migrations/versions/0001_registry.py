"""Registry: models, versions, variants, tags, stage history.

Revision ID: 0001_registry
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001_registry"
down_revision = None
branch_labels = None
depends_on = None

document = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("name", name="uq_models_name"),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("major", sa.BigInteger(), nullable=False),
        sa.Column("minor", sa.BigInteger(), nullable=False),
        sa.Column("patch", sa.BigInteger(), nullable=False),
        sa.Column("prerelease", sa.String(128), nullable=True),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("author", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("parent", sa.String(128), nullable=True),
        sa.Column("golden_sha256", sa.String(64), nullable=False),
        sa.Column("document", document, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_model_versions"),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["models.id"],
            name="fk_model_versions_model_id_models",
            ondelete="RESTRICT",
        ),
        sa.UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),
    )
    op.create_index("ix_model_versions_stage", "model_versions", ["model_id", "stage"])
    op.create_index("ix_model_versions_golden_sha256", "model_versions", ["golden_sha256"])
    op.create_table(
        "model_variants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("runtime", sa.String(64), nullable=False),
        sa.Column("precision", sa.String(32), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("golden_sha256", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_model_variants"),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["model_versions.id"],
            name="fk_model_variants_version_id_model_versions",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("version_id", "name", name="uq_model_variants_version_name"),
    )
    op.create_index("ix_model_variants_sha256", "model_variants", ["sha256"])
    op.create_index("ix_model_variants_golden_sha256", "model_variants", ["golden_sha256"])
    op.create_table(
        "version_tags",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("version_id", "tag", name="pk_version_tags"),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["model_versions.id"],
            name="fk_version_tags_version_id_model_versions",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_version_tags_tag", "version_tags", ["tag"])
    op.create_table(
        "stage_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("from_stage", sa.String(16), nullable=True),
        sa.Column("to_stage", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_stage_changes"),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["model_versions.id"],
            name="fk_stage_changes_version_id_model_versions",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_stage_changes_version_id", "stage_changes", ["version_id"])


def downgrade() -> None:
    op.drop_table("stage_changes")
    op.drop_table("version_tags")
    op.drop_table("model_variants")
    op.drop_table("model_versions")
    op.drop_table("models")
