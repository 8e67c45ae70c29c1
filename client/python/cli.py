"""The ``exportd`` command: serve, export, fetch, jobs.

Exit status 0 on success; otherwise one line on stderr naming the cause (the gRPC code and the
server's message) and status 1 (2 for a usage error).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa

from ._client import DataSource, ExportClient, Progress
from ._options import SUFFIXES
from .errors import ExportdError

DEFAULT_TARGET = "127.0.0.1:50051"


def _target(args: argparse.Namespace) -> str:
    return str(args.target or os.environ.get("EXPORTD_TARGET") or DEFAULT_TARGET)


def _read_input(path: str) -> tuple[DataSource, int | None]:
    """A streaming reader for INPUT by its suffix, and its row count when the file says."""
    if path == "-":
        return pa.ipc.open_stream(sys.stdin.buffer), None
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        reader = pa.RecordBatchReader.from_batches(pf.schema_arrow, pf.iter_batches(65_536))
        return reader, pf.metadata.num_rows
    if suffix in (".arrow", ".feather", ".ipc"):
        # Memory-mapped: counting rows and then streaming the batches reads the file once.
        f = pa.ipc.open_file(pa.memory_map(path))

        def batches() -> Iterator[pa.RecordBatch]:
            for i in range(f.num_record_batches):
                yield f.get_batch(i)

        rows = sum(f.get_batch(i).num_rows for i in range(f.num_record_batches))
        return pa.RecordBatchReader.from_batches(f.schema, batches()), rows
    if suffix == ".arrows":
        return pa.ipc.open_stream(path), None
    if suffix == ".csv":
        import pyarrow.csv as pcsv

        return pcsv.open_csv(path), None
    raise _UnknownInput(path)


class _UnknownInput(Exception):
    """INPUT has a suffix the CLI cannot read."""


def _parse_options(pairs: Sequence[str]) -> dict[str, object]:
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"exportd: error: --option takes KEY=VALUE, not {pair!r}")
        options[key.strip()] = value
    return options


class _Bar:
    """A rich progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, label: str) -> None:
        self._progress = None
        if sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                TaskProgressColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._progress = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeRemainingColumn(),
                transient=True,
                console=None,
            )
            self._progress.start()
            self._task = self._progress.add_task(label, total=1.0, detail="")

    def update(self, p: Progress) -> None:
        if self._progress is None:
            return
        detail = f"queued #{p.queue_position}" if p.state == "queued" else f"{p.rows_done:,} rows"
        self._progress.update(self._task, completed=p.fraction, description=p.state, detail=detail)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def _export(args: argparse.Namespace) -> int:
    fmt = args.format.lower()
    if fmt not in SUFFIXES:
        print(
            f"exportd: error: unknown format {fmt!r}; choose one of {', '.join(SUFFIXES)}",
            file=sys.stderr,
        )
        return 2
    try:
        data, rows = _read_input(args.input)
    except _UnknownInput:
        print(
            f"exportd: error: cannot read {args.input!r}: "
            "use .parquet, .arrow/.feather, .arrows, .csv or -",
            file=sys.stderr,
        )
        return 2
    except (OSError, pa.ArrowException) as exc:
        print(f"exportd: error: cannot read {args.input!r}: {exc}", file=sys.stderr)
        return 1
    stem = "export" if args.input == "-" else Path(args.input).stem
    output = args.output or (stem + SUFFIXES[fmt])
    bar = _Bar(f"{fmt} export")
    started = time.monotonic()
    try:
        with ExportClient(_target(args), token=os.environ.get("EXPORTD_TOKEN")) as client:
            result = client.export(
                data,
                fmt,
                output=None if args.handle else output,
                delivery="handle" if args.handle else "stream",
                options=_parse_options(args.option),
                priority=args.priority,
                file_name=Path(output).name,
                expected_rows=rows,
                on_progress=bar.update,
            )
    finally:
        bar.close()
    took = time.monotonic() - started
    for w in result.warnings:
        print(f"exportd: warning: {w.code} x{w.count}: {w.message}", file=sys.stderr)
    print(
        f"{result.rows:,} rows, {result.size:,} bytes, sha256 {result.sha256} in {took:.2f} s",
        file=sys.stderr,
    )
    if args.handle:
        print(f"handle: {result.handle}")
    else:
        print(f"wrote {output}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    with ExportClient(_target(args), token=os.environ.get("EXPORTD_TOKEN")) as client:
        info = client.fetch(args.handle, args.output)
    print(f"wrote {args.output} ({info.size:,} bytes, sha256 {info.sha256})")
    return 0


def _jobs(args: argparse.Namespace) -> int:
    with ExportClient(_target(args), token=os.environ.get("EXPORTD_TOKEN")) as client:
        print(f"{'JOB':<28} {'STATE':<10} {'FORMAT':<8} {'ROWS':>12} {'CREATED':<20} FILE")
        for n, job in enumerate(client.list_jobs(page_size=100)):
            if n >= args.limit:
                break
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.created_at))
            rows = job.result.rows if job.result else job.progress.rows_done
            print(
                f"{job.job_id:<28} {job.state:<10} {job.format:<8} {rows:>12,} "
                f"{created:<20} {job.file_name}"
            )
    return 0


def _serve(args: argparse.Namespace) -> int:
    # The server is imported only here: the SDK and the other commands never load it.
    from exportd.server.app import serve
    from exportd.server.config import ConfigError, load_config

    flags = {
        key: getattr(args, "serve_" + key.replace(".", "_"))
        for key in _SERVE_KEYS
        if hasattr(args, "serve_" + key.replace(".", "_"))
    }
    try:
        config = load_config(flags, os.environ, Path(args.config) if args.config else None)
    except ConfigError as exc:
        print(f"exportd: error: {exc}", file=sys.stderr)
        return 2
    return serve(config)


# Settings of ``exportd serve`` (exportd.server.config documents each and the precedence:
# flags > EXPORTD_* environment variables > --config TOML file > defaults).
_SERVE_KEYS = (
    "host",
    "port",
    "data_dir",
    "max_concurrent",
    "max_queue",
    "artifact_ttl",
    "max_artifact_bytes",
    "min_free_bytes",
    "sweep_interval",
    "chunk_size",
    "progress_interval",
    "grace_period",
    "max_message_bytes",
    "auth_tokens_file",
    "max_running_per_tenant",
    "max_tenant_bytes",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "metrics_port",
    "log_json",
    "limits.max_bytes_received",
    "limits.max_rows",
    "limits.max_columns",
    "limits.max_batch_bytes",
    "limits.data_timeout",
)
_SERVE_HELP = {
    "port": "0 picks a free port (printed)",
    "data_dir": "artifacts and the job database (default ./exportd-data)",
    "max_concurrent": "exports rendering at once (default: CPU count)",
    "grace_period": "seconds running exports get on SIGTERM (default 30)",
    "auth_tokens_file": "TOML/JSON: sha256 hex of each token -> tenant; turns auth on",
    "tls_cert": "PEM certificate chain; with --tls-key serves TLS",
    "tls_client_ca": "PEM CA; clients must present a certificate it signed",
    "metrics_port": "serve Prometheus metrics over HTTP on this port",
    "log_json": "true: one JSON object per log line",
}


def _add_serve_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--config", help="TOML file of settings (default $EXPORTD_CONFIG); flags and env win"
    )
    for key in _SERVE_KEYS:
        flag = "--" + key.replace(".", "-").replace("_", "-")
        dest = "serve_" + key.replace(".", "_")
        extra: dict[str, object] = {}
        if key == "log_json":
            # A bare --log-json means true; --log-json=false is accepted too.
            extra = {"nargs": "?", "const": "true"}
        serve.add_argument(
            flag,
            dest=dest,
            default=argparse.SUPPRESS,
            metavar="VALUE",
            help=_SERVE_HELP.get(key, f"see exportd.server.config ({_env_name(key)})"),
            **extra,  # type: ignore[arg-type]
        )
    serve.set_defaults(run=_serve)


def _env_name(key: str) -> str:
    return "EXPORTD_" + key.replace(".", "_").upper()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exportd", description="Turn Arrow tables into files.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the server",
        description="Run the server. Every setting also reads EXPORTD_<NAME> and the --config "
        "file; precedence: flags > environment > file > defaults.",
    )
    _add_serve_arguments(serve)

    export = sub.add_parser("export", help="export a file through the server")
    export.add_argument(
        "input", help=".parquet, .arrow/.feather, .arrows, .csv, or - (Arrow IPC stream on stdin)"
    )
    export.add_argument("-f", "--format", required=True, help=", ".join(SUFFIXES))
    export.add_argument("-o", "--output", help="default: INPUT's name with the format's suffix")
    export.add_argument("--target", help=f"server (default $EXPORTD_TARGET or {DEFAULT_TARGET})")
    export.add_argument(
        "--handle", action="store_true", help="keep the file on the server; print its handle"
    )
    export.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    export.add_argument("--priority", type=int, default=0)
    export.set_defaults(run=_export)

    fetch = sub.add_parser("fetch", help="download a kept file (resumes a partial OUTPUT)")
    fetch.add_argument("handle")
    fetch.add_argument("-o", "--output", required=True)
    fetch.add_argument("--target")
    fetch.set_defaults(run=_fetch)

    jobs = sub.add_parser("jobs", help="list recent jobs")
    jobs.add_argument("--target")
    jobs.add_argument("--limit", type=int, default=50)
    jobs.set_defaults(run=_jobs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
        return code
    except ExportdError as exc:
        print(f"exportd: error: {exc.code.name}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("exportd: error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
