"""Settings from the environment (prefix ZHIZHI_), built once by `bootstrap`, never at import time."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything a deployment may change. Defaults run the embedded single-machine setup."""

    model_config = SettingsConfigDict(env_prefix="ZHIZHI_", env_file=None, extra="ignore")

    database_url: str = Field(default="", description="SQLAlchemy URL; empty means SQLite in data_dir")
    data_dir: Path = Field(default=Path("var"), description="where the SQLite file, caches and logs live")
    places_file: Path | None = Field(default=None, description="GeoJSON of the place hierarchy to load")
    catalogue_dir: Path | None = Field(default=None, description="folder of catalogue files (default: packaged)")
    timezone: str = "Asia/Shanghai"
    auto_register: bool = Field(default=True, description="register (立案) located, categorised reports at once")
    auto_dispatch: bool = Field(default=True, description="dispatch registered cases by the responsibility table")
    overdue_interval_s: float = Field(default=60.0, description="how often the overdue job runs in `serve`")
    outbox_interval_s: float = Field(default=2.0, description="how often the outbox worker delivers")
    webhook_timeout_s: float = 5.0
    max_body_bytes: int = 1_000_000
    # People and access (issue 5)
    data_keys: str = Field(default="", repr=False,
                           description="comma-separated Fernet keys for personal data; first encrypts")
    data_key_file: Path | None = Field(default=None, description="key file (default <data_dir>/keys/data.keys)")
    session_ttl_hours: float = Field(default=12.0, description="how long a console/API login token lives")
    login_max_failures: int = Field(default=5, description="failed logins per user or address before 429")
    login_window_s: float = Field(default=300.0, description="the window those failures are counted in")

    # Smart dispatch (zhizhi.dispatch; docs/dispatch.md)
    dispatch_models_dir: Path | None = Field(default=None, description="trained models (default: data_dir/models)")
    dispatch_on_bad_model: str = Field(default="refuse", description="a tampered or incompatible model file: "
                                       "'refuse' to start, or 'fallback' to keywords with a warning")
    dispatch_merge_duplicates: bool = Field(default=True, description="merge repeat reports into the open case")
    duplicate_window_hours: float = 72.0
    duplicate_distance_m: float = 300.0
    duplicate_min_similarity: float = 0.5

    def models_dir(self) -> Path:
        return self.dispatch_models_dir or self.data_dir / "models"

    # Perception and early warning (zhizhi.sensing; docs/sensing.md)
    sensing_file: Path | None = Field(default=None, description="scenes, device types and alarm rules (TOML)")
    sensing_retention_days: int = Field(default=90, description="observations older than this are deleted")
    sensing_tick_s: float = Field(default=30.0, description="how often offline rules and retention run in `serve`")
    sensing_max_body_bytes: int = Field(default=64_000_000, description="limit for observation batches")
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'zhizhi.db').as_posix()}"
