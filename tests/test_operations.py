"""Operating exportd: configuration sources, SIGTERM, metrics and JSON logs, against real servers
and real ``exportd serve`` processes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pyarrow as pa
import pytest
from exportd.client import ExportClient, ExportdError, ResourceExhaustedError, StatusCode
from exportd.client.cli import build_parser
from exportd.server.config import ConfigError, ServerConfig, config_keys, load_config
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import reference_table

EXPORTD = str(Path(sys.executable).parent / "exportd")


class ServeProcess:
    """``exportd serve --port 0`` with extra flags and environment; the port from its first line."""

    def __init__(
        self, data_dir: Path, *extra: str, env: dict[str, str] | None = None, stderr: Path
    ) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("EXPORTD_")}
        self._stderr = stderr.open("w")
        self.proc = subprocess.Popen(
            [EXPORTD, "serve", "--port", "0", "--data-dir", str(data_dir), *extra],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env={**clean, **(env or {})},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("exportd listening on "), line + stderr.read_text()
        self.target = line.rsplit(" ", 1)[1].strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._stderr.close()


def held(table: pa.Table, release: threading.Event) -> Iterator[pa.RecordBatch]:
    batches = table.to_batches(max_chunksize=100)
    yield batches[0]
    release.wait(60)
    yield from batches[1:]


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


# -- configuration -------------------------------------------------------------------------------


def test_precedence_flags_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    path = tmp_path / "exportd.toml"
    path.write_text(
        'host = "0.0.0.0"\nmax_queue = 7\ngrace_period = 3.5\nmax_concurrent = 5\n'
        "metrics_port = 9100\nlog_json = true\n[limits]\nmax_rows = 1_000\ndata_timeout = 9\n"
    )
    env = {"EXPORTD_MAX_QUEUE": "8", "EXPORTD_LIMITS_MAX_ROWS": "2000", "EXPORTD_GRACE_PERIOD": ""}
    config = load_config({"max_queue": "9", "metrics_port": "none"}, env, path)
    defaults = ServerConfig()
    assert config.max_queue == 9  # flag beats env and file
    assert config.limits.max_rows == 2000  # env beats file
    assert config.grace_period == 3.5  # an empty variable is unset: the file decides
    assert config.host == "0.0.0.0" and config.max_concurrent == 5 and config.log_json is True
    assert config.limits.data_timeout == 9.0
    assert config.metrics_port is None  # "none" clears an optional setting
    assert config.port == defaults.port and config.limits.max_columns == 20_000  # defaults

    via_env = load_config({}, {"EXPORTD_CONFIG": str(path), "EXPORTD_LOG_JSON": "off"})
    assert via_env.max_queue == 7 and via_env.log_json is False


def test_bad_settings_name_their_source(tmp_path: Path) -> None:
    typo = tmp_path / "typo.toml"
    typo.write_text("max_qeue = 3\n")
    with pytest.raises(ConfigError, match="unknown keys max_qeue"):
        load_config({}, {}, typo)
    with pytest.raises(ConfigError, match="EXPORTD_MAX_QUEUE"):
        load_config({}, {"EXPORTD_MAX_QUEUE": "lots"})
    with pytest.raises(ConfigError, match="--limits-max-rows"):
        load_config({"limits.max_rows": "1.5"}, {})
    done = subprocess.run(
        [EXPORTD, "serve", "--config", str(typo)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2 and "max_qeue" in done.stderr


def test_every_setting_has_a_flag() -> None:
    parser = build_parser()
    for key in config_keys():
        flag = "--" + key.replace(".", "-").replace("_", "-")
        args = parser.parse_args(["serve", flag, "1"])
        assert getattr(args, "serve_" + key.replace(".", "_")) == "1"


def test_serve_process_reads_file_env_and_flags(tmp_path: Path) -> None:
    table = reference_table(50)
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[tokens]\n"{hashlib.sha256(b"tok").hexdigest()}" = "acme"\n')
    conf = tmp_path / "exportd.toml"
    conf.write_text(f'auth_tokens_file = "{tokens}"\n[limits]\nmax_rows = 10\n')
    proc = ServeProcess(
        tmp_path / "data",
        "--config",
        str(conf),
        "--limits-max-rows",
        "100",
        env={"EXPORTD_LIMITS_MAX_ROWS": "20"},
        stderr=tmp_path / "stderr.txt",
    )
    try:
        with ExportClient(proc.target) as anonymous, pytest.raises(ExportdError) as info:
            anonymous.export(table, "csv")
        assert info.value.code is StatusCode.UNAUTHENTICATED  # the file's token table is on
        with ExportClient(proc.target, token="tok") as c:
            assert c.export(table, "csv").rows == 50  # the flag's 100 rows beat env's 20
            with pytest.raises(ResourceExhaustedError):
                c.export(reference_table(101), "csv")
    finally:
        proc.close()


# -- SIGTERM -------------------------------------------------------------------------------------


def test_sigterm_drains_then_cancels_and_exits_0(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = ServeProcess(data, "--grace-period", "3", stderr=tmp_path / "stderr.txt")
    table = reference_table(1_000)
    quick, slow = threading.Event(), threading.Event()
    ids: dict[str, str] = {}
    outcomes: dict[str, object] = {}

    def run(name: str, release: threading.Event) -> None:
        with ExportClient(proc.target) as c:
            try:
                outcomes[name] = c.export(
                    held(table, release),
                    "csv",
                    on_accepted=lambda j: ids.__setitem__(name, j),
                )
            except ExportdError as exc:
                outcomes[name] = exc

    threads = [
        threading.Thread(target=run, args=("finishes", quick)),
        threading.Thread(target=run, args=("overruns", slow)),
    ]
    channel = grpc.insecure_channel(proc.target)
    try:
        for t in threads:
            t.start()
        wait_for(lambda: len(ids) == 2)
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest()).status == (
            health_pb2.HealthCheckResponse.SERVING
        )
        proc.proc.send_signal(signal.SIGTERM)
        wait_for(
            lambda: (
                health.Check(health_pb2.HealthCheckRequest()).status
                == health_pb2.HealthCheckResponse.NOT_SERVING
            )
        )
        with ExportClient(proc.target) as late, pytest.raises(ExportdError) as refused:
            late.export(table, "csv")
        assert refused.value.code in (StatusCode.RESOURCE_EXHAUSTED, StatusCode.UNAVAILABLE)
        quick.set()  # within the grace period: this one completes
        assert proc.proc.wait(30) == 0
    finally:
        quick.set()
        slow.set()
        channel.close()
        for t in threads:
            t.join(30)
        proc.close()
    finished = outcomes["finishes"]
    assert not isinstance(finished, ExportdError), finished
    assert finished.rows == table.num_rows  # type: ignore[attr-defined]
    overran = outcomes["overruns"]
    assert isinstance(overran, ExportdError)
    assert overran.code in (StatusCode.CANCELLED, StatusCode.UNAVAILABLE)

    again = ServeProcess(data, stderr=tmp_path / "stderr2.txt")
    try:
        with ExportClient(again.target) as c:
            assert c.get_job(ids["finishes"]).state == "succeeded"
            cancelled = c.get_job(ids["overruns"])
            assert cancelled.state == "cancelled", cancelled
            assert cancelled.error is not None and "shut" in cancelled.error.message
        again.proc.send_signal(signal.SIGTERM)
        assert again.proc.wait(30) == 0
    finally:
        again.close()
    with contextlib.suppress(FileNotFoundError):
        assert not os.listdir(data / "artifacts" / "tmp")
