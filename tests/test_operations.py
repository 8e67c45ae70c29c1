"""Operating exportd: configuration sources, SIGTERM, metrics and JSON logs, against real servers
and real ``exportd serve`` processes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from exportd.client import ExportClient, ExportdError, ResourceExhaustedError, StatusCode
from exportd.client.cli import build_parser
from exportd.server.app import RunningServer
from exportd.server.config import (
    ConfigError,
    ExportLimits,
    ServerConfig,
    config_keys,
    load_config,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from support import ServerFactory, reference_table, wait_for

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
        assert refused.value.code is StatusCode.UNAVAILABLE
        assert refused.value.reason == "SHUTTING_DOWN"
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


# -- metrics and logs ----------------------------------------------------------------------------


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of ``/metrics`` parsed by prometheus_client's own text parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_exports_bytes_queue_and_artifacts(make_server: ServerFactory) -> None:
    server = make_server(
        metrics_port=0, max_concurrent=1, max_queue=4, limits=ExportLimits(max_rows=1_500)
    )
    assert server.metrics is not None
    table = reference_table(1_000)
    release = threading.Event()
    ids: list[str] = []
    with ExportClient(server.target) as c:
        csv_result = c.export(table, "csv")
        kept = c.export(table, "parquet", delivery="handle")
        with pytest.raises(ResourceExhaustedError):
            c.export(reference_table(2_000), "csv")  # over the row limit
        holder = threading.Thread(
            target=lambda: c.export(held(table, release), "jsonl", on_accepted=ids.append)
        )
        holder.start()
        wait_for(lambda: len(ids) == 1)
        waiting = threading.Thread(target=lambda: c.export(table, "tsv", on_accepted=ids.append))
        waiting.start()
        try:
            wait_for(lambda: len(ids) == 2)
            live = scrape(server.metrics.port)
            assert live[("exportd_running_exports", ())] == 1
            assert live[("exportd_queue_depth", ())] == 1
        finally:
            release.set()
            holder.join(30)
            waiting.join(30)
        downloaded = b"".join(data for _, data in c.read(kept.handle))
        assert pq.read_table(pa.BufferReader(downloaded)).equals(table)
    m = scrape(server.metrics.port)
    assert m[("exportd_bytes_downloaded_total", ())] == kept.size
    assert m[("exportd_exports_total", (("format", "csv"), ("outcome", "succeeded")))] == 1
    assert m[("exportd_exports_total", (("format", "parquet"), ("outcome", "succeeded")))] == 1
    assert m[("exportd_exports_total", (("format", "csv"), ("outcome", "resource_exhausted")))] == 1
    assert m[("exportd_exports_total", (("format", "jsonl"), ("outcome", "succeeded")))] == 1
    assert m[("exportd_exports_total", (("format", "tsv"), ("outcome", "succeeded")))] == 1
    assert m[("exportd_export_size_bytes_sum", (("format", "csv"),))] == csv_result.size
    assert m[("exportd_export_size_bytes_count", (("format", "parquet"),))] == 1
    assert m[("exportd_export_duration_seconds_count", (("format", "csv"),))] == 2
    assert m[("exportd_artifacts_stored", ())] == 1
    assert m[("exportd_artifact_bytes", ())] == kept.size
    assert m[("exportd_running_exports", ())] == 0 and m[("exportd_queue_depth", ())] == 0
    jobs = [server.jobs.get(j, "") for j in (csv_result.job_id, kept.job_id, *ids)]
    assert m[("exportd_bytes_received_total", ())] >= sum(j.progress.bytes_received for j in jobs)
    assert m[("exportd_bytes_written_total", ())] >= sum(
        j.result.size for j in jobs if j.result is not None
    )
    assert all(j.result is not None for j in jobs)


def test_no_metrics_port_by_default(server: RunningServer) -> None:
    assert server.metrics is None and server.config.metrics_port is None


def test_json_logs_and_metrics_from_a_serve_process(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": {hashlib.sha256(b"tok").hexdigest(): "acme"}}))
    stderr = tmp_path / "stderr.txt"
    proc = ServeProcess(
        tmp_path / "data",
        "--log-json",
        "--metrics-port",
        "0",
        env={"EXPORTD_AUTH_TOKENS_FILE": str(tokens)},
        stderr=stderr,
    )
    try:
        assert proc.proc.stdout is not None
        metrics_line = proc.proc.stdout.readline()
        port = int(metrics_line.rsplit(":", 1)[1].split("/")[0])
        with ExportClient(proc.target, token="tok") as c:
            done = c.export(reference_table(100), "csv")
            with pytest.raises(ExportdError):
                c.export(reference_table(100), "csv", options={"delimiter": "ab"})
        samples = scrape(port)
        assert samples[("exportd_exports_total", (("format", "csv"), ("outcome", "succeeded")))]
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(30) == 0
    finally:
        proc.close()
    lines = [json.loads(line) for line in stderr.read_text().splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(r) for r in lines)
    about_job = [r for r in lines if r.get("job_id") == done.job_id]
    assert len(about_job) >= 2  # created and succeeded
    assert all(r["tenant"] == "acme" for r in lines if "job_id" in r)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--auth-tokens-file", "tokens.toml"], "sha256 hex digest"),
        (["--auth-tokens-file", "missing.toml"], "missing.toml"),
        (["--tls-cert", "tokens.toml"], "both tls_cert and tls_key"),
    ],
)
def test_bad_startup_files_exit_2_with_a_message(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    (tmp_path / "tokens.toml").write_text('[tokens]\n"plain-password" = "acme"\n')
    done = subprocess.run(
        [EXPORTD, "serve", "--port", "0", "--data-dir", "data", *flags],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("exportd: error: cannot start") and message in done.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was created
