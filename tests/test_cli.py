"""The exportd command against a real server process: export, fetch, jobs, kill -9 and restart."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from exportd.client import ExportClient, ExportdError
from python_calamine import CalamineWorkbook
from support import reference_table

EXPORTD = str(Path(sys.executable).parent / "exportd")


class ServerProcess:
    """``exportd serve --port 0`` in its own process, reading the port from its first line."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [EXPORTD, "serve", "--port", "0", "--data-dir", str(data_dir), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("exportd listening on "), line
        self.target = line.rsplit(" ", 1)[1].strip()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(30)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "data")
    yield server
    if server.proc.poll() is None:
        server.stop(signal.SIGKILL)


def cli(*args: str, target: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXPORTD, *args, "--target", target], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def parquet_input(tmp_path: Path) -> tuple[Path, pa.Table]:
    table = reference_table(3_000)
    path = tmp_path / "orders.parquet"
    pq.write_table(table, path, row_group_size=1_000)
    return path, table


def test_parquet_to_csv_xlsx_pdf_streamed_and_by_handle(
    served: ServerProcess, parquet_input: tuple[Path, pa.Table], tmp_path: Path
) -> None:
    source, table = parquet_input
    for fmt in ("csv", "xlsx", "pdf"):
        done = cli("export", str(source), "-f", fmt, target=served.target, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        streamed = tmp_path / f"orders.{fmt}"
        assert streamed.exists() and f"wrote orders.{fmt}" in done.stdout

        kept = cli("export", str(source), "-f", fmt, "--handle", target=served.target, cwd=tmp_path)
        assert kept.returncode == 0, kept.stderr
        handle = kept.stdout.strip().splitlines()[-1].removeprefix("handle: ")
        fetched = tmp_path / f"fetched.{fmt}"
        got = cli("fetch", handle, "-o", str(fetched), target=served.target, cwd=tmp_path)
        assert got.returncode == 0, got.stderr
        assert fetched.stat().st_size > 0

        if fmt == "csv":
            opts = pcsv.ConvertOptions(column_types=table.schema)
            for path in (streamed, fetched):
                assert pcsv.read_csv(path, convert_options=opts).equals(table)
        elif fmt == "xlsx":
            for path in (streamed, fetched):
                ws = openpyxl.load_workbook(path, read_only=True).worksheets[0]
                rows = [list(r) for r in ws.iter_rows(values_only=True)]
                assert rows[1:] == [list(r.values()) for r in table.to_pylist()]
                cal = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).to_python()
                assert len(cal) == table.num_rows + 1
                assert cal[1][5] == table["placed_at"][0].as_py() and cal[1][4] is True
        else:
            for path in (streamed, fetched):
                text = subprocess.run(
                    ["pdftotext", "-layout", str(path), "-"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                pages = text.split("\f")[:-1]
                assert len(pages) > 1
                assert all("order_id" in page for page in pages)
                numbers = {int(tok) for tok in text.split() if tok.isdigit()}
                assert set(table["order_id"].to_pylist()) <= numbers

    listing = cli("jobs", target=served.target, cwd=tmp_path)
    assert listing.returncode == 0
    assert listing.stdout.count("succeeded") == 6


def test_options_stdin_and_errors(served: ServerProcess, tmp_path: Path) -> None:
    table = reference_table(100)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    done = subprocess.run(
        [
            EXPORTD,
            "export",
            "-",
            "-f",
            "csv",
            "-o",
            "semi.csv",
            "--option",
            "delimiter=;",
            "--option",
            "header=false",
            "--target",
            served.target,
        ],
        input=sink.getvalue().to_pybytes(),
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    first = (tmp_path / "semi.csv").read_text().splitlines()[0]
    assert first.startswith("1;") and "order_id" not in first

    pq.write_table(table, tmp_path / "small.parquet")
    bad = cli(
        "export",
        "small.parquet",
        "-f",
        "csv",
        "--option",
        "colour=red",
        target=served.target,
        cwd=tmp_path,
    )
    assert bad.returncode == 1
    assert (
        bad.stderr.count("\n") == 1 and "INVALID_ARGUMENT" in bad.stderr and "colour" in bad.stderr
    )

    missing = cli("fetch", "art_doesnotexist", "-o", "x", target=served.target, cwd=tmp_path)
    assert missing.returncode == 1 and missing.stderr.startswith("exportd: error: NOT_FOUND")


def test_kill_9_then_restart_keeps_handles_and_fails_unfinished_jobs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = ServerProcess(data)
    source = tmp_path / "orders.parquet"
    pq.write_table(reference_table(2_000), source)
    kept = cli(
        "export", str(source), "-f", "parquet", "--handle", target=first.target, cwd=tmp_path
    )
    handle = kept.stdout.strip().splitlines()[-1].removeprefix("handle: ")
    digest = hashlib.sha256()
    stored = list((data / "artifacts" / "files").iterdir())
    digest.update(stored[0].read_bytes())
    # An export left hanging mid-upload when the process dies.

    gate = threading.Event()

    def hang() -> Iterator[pa.RecordBatch]:
        yield reference_table(10).to_batches()[0]
        gate.wait(20)

    hung_ids: list[str] = []
    client = ExportClient(first.target)

    def doomed() -> None:
        with contextlib.suppress(ExportdError):  # the server dies under it
            client.export(hang(), "csv", on_accepted=hung_ids.append)

    t = threading.Thread(target=doomed, daemon=True)
    t.start()
    while not hung_ids:
        pass
    first.stop(signal.SIGKILL)
    gate.set()
    client.close()

    second = ServerProcess(data)
    try:
        fetched = tmp_path / "again.parquet"
        got = cli("fetch", handle, "-o", str(fetched), target=second.target, cwd=tmp_path)
        assert got.returncode == 0, got.stderr
        assert hashlib.sha256(fetched.read_bytes()).hexdigest() == digest.hexdigest()
        with ExportClient(second.target) as c:
            job = c.get_job(hung_ids[0])
            assert job.state == "failed" and job.error is not None
            assert job.error.reason == "SERVER_RESTARTED"
        assert second.stop() == 0
    finally:
        if second.proc.poll() is None:
            second.stop(signal.SIGKILL)
    assert not os.listdir(data / "artifacts" / "tmp")
