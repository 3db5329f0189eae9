"""Settings: one pydantic-settings class, read from ``WANLORA_*`` variables by the entry points."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user database entry (containers)
        return "unknown"


class Settings(BaseSettings):
    """Where wanlora keeps its data. Nothing is opened or connected when this is built."""

    model_config = SettingsConfigDict(env_prefix="WANLORA_", extra="ignore")

    home: Path = Field(default=Path("~/.wanlora"), description="Root of the embedded database and store.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///$WANLORA_HOME/registry.db"
    )
    storage_url: str | None = Field(
        default=None, description="Artifact store URL; default file://$WANLORA_HOME/artifacts"
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="Endpoint of an S3-compatible store (MinIO, Ceph, R2); default AWS."
    )
    s3_region: str | None = Field(default=None, description="S3 region.")
    s3_presign: bool = Field(default=False, description="Hand out presigned S3 download URLs.")
    server: str | None = Field(default=None, description="URL of a wanlora server; commands then act on it.")
    token: str | None = Field(
        default=None, description="API token; the CLI acts with its role instead of as the local admin."
    )
    max_upload_bytes: int = Field(
        default=8 * 1024**3, description="Largest file the API accepts (bytes); larger uploads get 413."
    )
    auth_cache_seconds: float = Field(
        default=2.0, description="How long a server process trusts a checked token (revocation delay elsewhere)."
    )
    dashboard_session_hours: float = Field(
        default=12.0,
        gt=0,
        le=24 * 30,
        description="How long a dashboard sign-in lasts (never past its token's expiry).",
    )
    failed_sign_ins_per_address: int = Field(
        default=30, ge=1, description="Bad tokens one client address may present per minute before 429."
    )
    failed_sign_ins_per_prefix: int = Field(
        default=10, ge=1, description="Bad tokens with one prefix (their first 12 characters) per minute before 429."
    )
    change_check_seconds: float = Field(
        default=0.05, description="How often a server process re-reads the event log head for cached answers."
    )
    policy_file: Path | None = Field(
        default=None, description="Evaluation policy (TOML); default $WANLORA_HOME/policy.toml when it exists."
    )
    webhook_allow_hosts: str = Field(
        default="",
        description="Internal hosts webhooks may reach, comma-separated names, addresses or networks "
        "(hooks.internal,10.1.0.0/16); every other private, loopback or link-local target is refused.",
    )
    project: str = Field(default="default", description="Project used when a command names none.")
    user: str = Field(default_factory=_default_actor, description="Actor recorded in the event log.")

    @property
    def webhook_allow_list(self) -> tuple[str, ...]:
        return tuple(h.strip() for h in self.webhook_allow_hosts.split(",") if h.strip())

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home_dir / 'registry.db'}"

    @property
    def resolved_policy_file(self) -> Path | None:
        if self.policy_file is not None:
            return self.policy_file.expanduser()
        default = self.home_dir / "policy.toml"
        return default if default.exists() else None

    def s3_options(self) -> dict[str, Any]:
        return {"endpoint_url": self.s3_endpoint_url, "region": self.s3_region, "presign": self.s3_presign}

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or f"file://{self.home_dir / 'artifacts'}"
