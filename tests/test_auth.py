"""Bearer tokens, tenants and TLS against a real server on 127.0.0.1:0."""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import threading
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from exportd.client import (
    ExportClient,
    ExportdError,
    NotFoundError,
    ResourceExhaustedError,
    StatusCode,
)
from exportd.server.app import RunningServer
from exportd.server.jobs import JobState
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from support import ServerFactory, reference_table, wait_for

TOKENS = {"acme": "acme-secret-token", "globex": "globex-secret-token"}


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.toml"
    lines = ["[tokens]"] + [f'"{sha(tok)}" = "{tenant}"' for tenant, tok in TOKENS.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def authed(make_server: ServerFactory, token_file: Path) -> RunningServer:
    return make_server(auth_tokens_file=token_file)


def held(table: pa.Table, release: threading.Event) -> object:
    batches = table.to_batches(max_chunksize=100)
    yield batches[0]
    assert release.wait(30)
    yield from batches[1:]


def test_missing_or_wrong_token_is_unauthenticated(authed: RunningServer, table: pa.Table) -> None:
    with ExportClient(authed.target) as anonymous:
        with pytest.raises(ExportdError) as missing:
            anonymous.export(table, "csv")
        assert missing.value.code is StatusCode.UNAUTHENTICATED
        assert "bearer token" in missing.value.message and "EXPORTD_TOKEN" in missing.value.message
        with pytest.raises(ExportdError) as listing:
            list(anonymous.list_jobs())
        assert listing.value.code is StatusCode.UNAUTHENTICATED
    with ExportClient(authed.target, token="not-a-token") as wrong:
        with pytest.raises(ExportdError) as bad:
            wrong.get_job("job_whatever")
        assert bad.value.code is StatusCode.UNAUTHENTICATED
        assert "not valid" in bad.value.message
        with pytest.raises(ExportdError) as bad_stream:
            list(wrong.read("art_whatever"))
        assert bad_stream.value.code is StatusCode.UNAUTHENTICATED
    assert authed.jobs.running_jobs() == []
    with ExportClient(authed.target, token=TOKENS["acme"]) as ok:
        assert ok.export(table, "csv").rows == table.num_rows


def test_health_and_reflection_stay_open(authed: RunningServer) -> None:
    channel = grpc.insecure_channel(authed.target)
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name for r in responses for s in r.list_services_response.service}
        assert "exportd.v1.ExportService" in names
    finally:
        channel.close()


def test_tenants_see_only_their_own_jobs_and_files(
    authed: RunningServer, table: pa.Table, tmp_path: Path
) -> None:
    with (
        ExportClient(authed.target, token=TOKENS["acme"]) as acme,
        ExportClient(authed.target, token=TOKENS["globex"]) as globex,
    ):
        kept = acme.export(table, "parquet", delivery="handle")
        assert kept.handle
        mine = globex.export(table.slice(0, 10), "csv")
        # globex cannot see, watch, cancel or read acme's job or file: NOT_FOUND, as if unknown.
        for call in (
            lambda: globex.get_job(kept.job_id),
            lambda: list(globex.watch(kept.job_id)),
            lambda: globex.cancel(kept.job_id),
            lambda: globex.get_artifact(kept.handle),
            lambda: list(globex.read(kept.handle)),
            lambda: globex.delete_artifact(kept.handle),
        ):
            with pytest.raises(NotFoundError):
                call()
        assert [j.job_id for j in globex.list_jobs()] == [mine.job_id]
        assert [j.job_id for j in acme.list_jobs()] == [kept.job_id]
        out = tmp_path / "acme.parquet"
        acme.fetch(kept.handle, out)
        assert pq.read_table(out).equals(table)  # the failed delete left acme's file intact
    stored = authed.jobs.get(kept.job_id, "acme")
    assert stored.tenant == "acme"


def test_json_token_file(make_server: ServerFactory, tmp_path: Path, table: pa.Table) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": {sha("json-token"): "initech"}}))
    server = make_server(auth_tokens_file=path)
    with ExportClient(server.target, token="json-token") as c:
        result = c.export(table, "csv")
    assert server.jobs.get(result.job_id, "initech").tenant == "initech"


def test_per_tenant_stored_bytes_cap(
    make_server: ServerFactory, token_file: Path, table: pa.Table
) -> None:
    server = make_server(auth_tokens_file=token_file, max_tenant_bytes=1)
    with (
        ExportClient(server.target, token=TOKENS["acme"]) as acme,
        ExportClient(server.target, token=TOKENS["globex"]) as globex,
    ):
        first = acme.export(table, "csv", delivery="handle")
        assert first.size > 1
        with pytest.raises(ResourceExhaustedError) as full:
            acme.export(table, "csv", delivery="handle")
        assert full.value.reason == "TENANT_QUOTA"
        assert globex.export(table, "csv", delivery="handle").handle  # others unaffected
        acme.delete_artifact(first.handle)
        assert acme.export(table, "csv", delivery="handle").handle


def test_per_tenant_running_cap(
    make_server: ServerFactory, token_file: Path, table: pa.Table
) -> None:
    server = make_server(
        auth_tokens_file=token_file, max_concurrent=4, max_queue=4, max_running_per_tenant=1
    )
    release = threading.Event()
    ids: list[str] = []
    with (
        ExportClient(server.target, token=TOKENS["acme"]) as acme,
        ExportClient(server.target, token=TOKENS["globex"]) as globex,
    ):
        try:
            holder = threading.Thread(
                target=lambda: acme.export(held(table, release), "csv", on_accepted=ids.append)  # type: ignore[arg-type]
            )
            holder.start()
            wait_for(lambda: len(ids) == 1)
            second = threading.Thread(
                target=lambda: acme.export(table, "csv", on_accepted=ids.append)
            )
            second.start()
            wait_for(lambda: len(ids) == 2)
            # acme's second export waits for acme's first although three slots are free ...
            assert server.governor.running == 1 and server.governor.queued == 1
            # ... while globex is not held back by acme's cap.
            assert globex.export(table, "csv").rows == table.num_rows
            assert server.jobs.get(ids[1], "acme").state is JobState.QUEUED
        finally:
            release.set()
        holder.join(30)
        second.join(30)
    acme_jobs, _ = server.jobs.list_page("acme", page_size=10, page_token="")
    assert [j.state for j in acme_jobs] == [JobState.SUCCEEDED, JobState.SUCCEEDED]


@pytest.fixture
def table() -> pa.Table:
    return reference_table(1_000)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=exportd test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ext in (("server", ["-extfile", "san.ext"]), ("client", [])):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", *ext, cwd=d)  # fmt: skip
    # A second CA that signed nothing the server trusts.
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=stranger", "-keyout", "stranger.key", "-out", "stranger.pem", cwd=d)  # fmt: skip
    return d


def test_tls_serves_only_tls(make_server: ServerFactory, pki: Path, table: pa.Table) -> None:
    server = make_server(tls_cert=pki / "server.pem", tls_key=pki / "server.key")
    ca = (pki / "ca.pem").read_bytes()
    with ExportClient(server.target, root_certificates=ca) as c:
        result = c.export(table, "parquet")
        assert pq.read_table(pa.BufferReader(result.data)).equals(table)
    with ExportClient(server.target) as plain, pytest.raises(ExportdError) as refused:
        plain.export(table, "csv", timeout=5)
    assert refused.value.code is StatusCode.UNAVAILABLE
    stranger = (pki / "stranger.pem").read_bytes()
    with (
        ExportClient(server.target, root_certificates=stranger) as c,
        pytest.raises(ExportdError) as untrusted,
    ):
        c.export(table, "csv", timeout=5)
    assert untrusted.value.code is StatusCode.UNAVAILABLE


def test_mutual_tls_needs_a_client_certificate(
    make_server: ServerFactory, pki: Path, token_file: Path, table: pa.Table
) -> None:
    server = make_server(
        tls_cert=pki / "server.pem",
        tls_key=pki / "server.key",
        tls_client_ca=pki / "ca.pem",
        auth_tokens_file=token_file,
    )
    ca = (pki / "ca.pem").read_bytes()
    key, chain = (pki / "client.key").read_bytes(), (pki / "client.pem").read_bytes()
    with ExportClient(
        server.target,
        token=TOKENS["acme"],
        root_certificates=ca,
        private_key=key,
        certificate_chain=chain,
    ) as c:
        result = c.export(table, "csv")
        assert result.rows == table.num_rows
        assert server.jobs.get(result.job_id, "acme").tenant == "acme"
    with (
        ExportClient(server.target, token=TOKENS["acme"], root_certificates=ca) as no_cert,
        pytest.raises(ExportdError) as refused,
    ):
        no_cert.export(table, "csv", timeout=5)
    assert refused.value.code is StatusCode.UNAVAILABLE


def test_a_client_that_goes_away_frees_its_slot_under_auth(
    authed: RunningServer, table: pa.Table
) -> None:
    release = threading.Event()
    ids: list[str] = []
    client = ExportClient(authed.target, token=TOKENS["acme"])

    def doomed() -> None:
        with contextlib.suppress(ExportdError):
            client.export(held(table, release), "csv", on_accepted=ids.append)  # type: ignore[arg-type]

    t = threading.Thread(target=doomed)
    t.start()
    try:
        wait_for(lambda: ids)
        wait_for(lambda: authed.governor.running == 1)
        client.close()  # the connection drops mid-upload
        wait_for(lambda: authed.jobs.get(ids[0], "acme").state.terminal)
        assert authed.governor.running == 0
        assert authed.jobs.get(ids[0], "acme").state is not JobState.SUCCEEDED
    finally:
        release.set()
        t.join(30)
    with ExportClient(authed.target, token=TOKENS["acme"]) as again:
        assert again.export(table, "csv").rows == table.num_rows
