"""Server configuration as frozen dataclasses with documented defaults.

``ServerConfig()`` is a working local server: loopback, ./exportd-data, SQLite beside the files,
auth off, plaintext, no metrics. :func:`load_config` builds one from four sources; for each
field the first source that sets it wins:

1. command-line flags of ``exportd serve``: ``--max-queue 64``, ``--limits-max-rows 1000``;
2. environment variables: ``EXPORTD_MAX_QUEUE=64``, ``EXPORTD_LIMITS_MAX_ROWS=1000``
   (an empty value counts as unset);
3. a TOML file named by ``--config`` or else ``EXPORTD_CONFIG``: top-level keys are the field
   names (``max_queue = 64``), per-export limits go in a ``[limits]`` table;
4. the defaults below.

Names are the field names below; flags use dashes, variables upper case with an ``EXPORTD_``
prefix. Optional fields take ``none`` on the command line or in a variable to clear them;
booleans take true/false, yes/no, on/off or 1/0. Unknown keys in the file are an error, so a typo
is never silently ignored.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ExportLimits:
    """Per-export limits; a breach ends the export with a specific status and message."""

    max_bytes_received: int = 16 << 30
    """Arrow IPC bytes one export may upload (RESOURCE_EXHAUSTED past it)."""
    max_rows: int = 500_000_000
    """Rows one export may carry (RESOURCE_EXHAUSTED past it)."""
    max_columns: int = 20_000
    """Columns one export may carry (INVALID_ARGUMENT past it)."""
    max_batch_bytes: int = 512 << 20
    """Decoded size of one record batch (INVALID_ARGUMENT past it)."""
    data_timeout: float = 60.0
    """Seconds to wait for the client's next data message (DEADLINE_EXCEEDED past it)."""


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``exportd serve`` can be told."""

    host: str = "127.0.0.1"
    """Interface to listen on."""
    port: int = 50051
    """Port to listen on; 0 picks a free one (printed on start)."""
    data_dir: Path = Path("exportd-data")
    """Artifacts, temp files and the SQLite database live here."""
    max_concurrent: int = field(default_factory=lambda: os.cpu_count() or 2)
    """Exports rendering at once (the governor's semaphore)."""
    max_queue: int = 32
    """Exports that may wait for a slot; one more is refused with RESOURCE_EXHAUSTED."""
    artifact_ttl: float = 24 * 3600.0
    """Seconds a kept file lives unless renewed."""
    max_artifact_bytes: int | None = None
    """Total size of kept files; the oldest are evicted past it. None: unbounded."""
    min_free_bytes: int = 256 << 20
    """Free disk space an export needs before it starts (RESOURCE_EXHAUSTED below it)."""
    sweep_interval: float = 60.0
    """Seconds between sweeps for expired files."""
    chunk_size: int = 1 << 20
    """Bytes per file chunk on the Export stream and ReadArtifact (at most 1 MiB)."""
    progress_interval: float = 0.1
    """Seconds between progress events (about ten a second)."""
    limits: ExportLimits = field(default_factory=ExportLimits)
    """Per-export limits."""
    grace_period: float = 30.0
    """Seconds running exports get to finish on SIGTERM before they are cancelled."""
    max_message_bytes: int = 8 << 20
    """Largest gRPC message the server accepts (data pieces) or sends."""
    auth_tokens_file: Path | None = None
    """TOML or JSON file mapping sha256 hex of bearer tokens to tenants; None: auth off."""
    max_running_per_tenant: int | None = None
    """Exports one tenant may render at once (the rest wait in the queue). None: no cap."""
    max_tenant_bytes: int | None = None
    """Bytes of kept files one tenant may hold before new exports are refused. None: no cap."""
    tls_cert: Path | None = None
    """PEM certificate chain of the server; with ``tls_key`` it serves TLS only."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""
    tls_client_ca: Path | None = None
    """PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS)."""
    metrics_port: int | None = None
    """Port for Prometheus metrics over HTTP on ``host`` (0 picks one). None: no metrics."""
    log_json: bool = False
    """Log one JSON object per line (with job_id and tenant on job lines) instead of text."""


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the source and the key."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(value: object, hint: Any, where: str) -> object:
    """``value`` (a string from flags or the environment, or a TOML value) as type ``hint``."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (types.UnionType, typing.Union) and type(None) in args:
        if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
            return None
        (hint,) = [a for a in args if a is not type(None)]
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE or text in _FALSE:
                return text in _TRUE
            raise ValueError("expected true or false")
        if hint is int:
            if isinstance(value, bool | float):
                raise ValueError("expected an integer")
            return int(str(value).replace("_", ""))
        if hint is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)  # type: ignore[arg-type]
        if hint is Path:
            if not isinstance(value, str):
                raise ValueError("expected a path")
            return Path(value).expanduser()
        if hint is str:
            if not isinstance(value, str):
                raise ValueError("expected a string")
            return value
    except ValueError as exc:
        raise ConfigError(f"{where}: {value!r}: {exc}") from None
    raise ConfigError(f"{where}: unsupported type {hint!r}")  # pragma: no cover


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def config_keys() -> list[str]:
    """Every settable key: ServerConfig's fields and ``limits.<field>`` for ExportLimits."""
    keys = [f.name for f in dataclasses.fields(ServerConfig) if f.name != "limits"]
    keys += [f"limits.{f.name}" for f in dataclasses.fields(ExportLimits)]
    return keys


def _file_values(path: Path) -> dict[str, object]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    known = set(config_keys())
    flat: dict[str, object] = {}
    for key, value in data.items():
        if key == "limits" and isinstance(value, dict):
            for sub, subvalue in value.items():
                flat[f"limits.{sub}"] = subvalue
        else:
            flat[key] = value
    unknown = sorted(set(flat) - known)
    if unknown:
        raise ConfigError(f"config file {path}: unknown keys {', '.join(unknown)}")
    return flat


def env_name(key: str) -> str:
    """The environment variable for ``key``: ``limits.max_rows`` -> ``EXPORTD_LIMITS_MAX_ROWS``."""
    return "EXPORTD_" + key.replace(".", "_").upper()


def load_config(
    flags: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> ServerConfig:
    """Build a ServerConfig: ``flags`` > ``env`` > the TOML file > defaults (module docstring).

    ``flags`` holds only what the command line set, keyed by field name (``limits.max_rows``
    for limits). ``env`` defaults to ``os.environ``. ``config_file`` defaults to
    ``EXPORTD_CONFIG`` from ``env``. Raises ConfigError naming the source and key of a bad value.
    """
    flags = dict(flags or {})
    env = os.environ if env is None else env
    unknown = sorted(set(flags) - set(config_keys()))
    if unknown:
        raise ConfigError(f"unknown settings {', '.join(unknown)}")
    if config_file is None and env.get("EXPORTD_CONFIG"):
        config_file = Path(env["EXPORTD_CONFIG"])
    from_file = _file_values(config_file) if config_file is not None else {}
    top = _hints(ServerConfig)
    nested = _hints(ExportLimits)
    chosen: dict[str, object] = {}
    for key in config_keys():
        hint = nested[key.removeprefix("limits.")] if key.startswith("limits.") else top[key]
        variable = env_name(key)
        if key in flags:
            flag = "--" + key.replace(".", "-").replace("_", "-")
            chosen[key] = _convert(flags[key], hint, f"flag {flag}")
        elif env.get(variable, "").strip():
            chosen[key] = _convert(env[variable], hint, f"environment {variable}")
        elif key in from_file:
            chosen[key] = _convert(from_file[key], hint, f"config file {config_file}: {key}")
    limits = ExportLimits(
        **{k.removeprefix("limits."): v for k, v in chosen.items() if k.startswith("limits.")}  # type: ignore[arg-type]
    )
    top_values = {k: v for k, v in chosen.items() if not k.startswith("limits.")}
    return ServerConfig(limits=limits, **top_values)  # type: ignore[arg-type]
