"""The fast path for data messages reads exactly what protobuf would, and only that shape."""

from __future__ import annotations

from typing import Any

import pytest
from exportd.server.exports import DataPiece
from exportd.server.servicer import parse_export_request
from exportd.v1 import export_service_pb2 as epb
from exportd.v1 import formats_pb2 as fpb


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 16_383, 16_384, 4 << 20])
def test_data_messages_take_the_fast_path(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    raw = epb.ExportRequest(data=epb.ExportData(arrow_ipc=payload)).SerializeToString()
    parsed = parse_export_request(raw)
    assert isinstance(parsed, DataPiece)
    assert bytes(parsed.data) == epb.ExportRequest.FromString(raw).data.arrow_ipc == payload


@pytest.mark.parametrize(
    "message",
    [
        epb.ExportRequest(spec=epb.ExportSpec(format=fpb.FORMAT_CSV, file_name="x.csv")),
        epb.ExportRequest(end=epb.ExportEnd()),
        epb.ExportRequest(cancel=epb.ExportCancel(reason="stop")),
        epb.ExportRequest(),
    ],
)
def test_other_messages_are_parsed_by_protobuf(message: epb.ExportRequest) -> None:
    parsed = parse_export_request(message.SerializeToString())
    assert isinstance(parsed, epb.ExportRequest) and parsed == message


def test_data_with_trailing_fields_falls_back() -> None:
    raw = epb.ExportRequest(data=epb.ExportData(arrow_ipc=b"abc")).SerializeToString()
    extra = raw + epb.ExportRequest(end=epb.ExportEnd()).SerializeToString()
    parsed = parse_export_request(extra)
    assert isinstance(parsed, epb.ExportRequest)
    assert parsed.WhichOneof("kind") == "end"  # protobuf's last-one-wins, not the fast path


@pytest.mark.parametrize(
    ("offset", "size"), [(0, 0), (0, 5), (1, 1), (300, 128), (1 << 40, 1 << 20)]
)
def test_chunks_encoded_by_hand_are_the_protobuf_message(offset: int, size: int) -> None:
    from exportd.client._client import _parse_chunk
    from exportd.server.servicer import encode_chunk
    from exportd.v1 import artifact_service_pb2 as apb

    data = bytes(i % 251 for i in range(size))
    raw = encode_chunk(offset, data)
    assert apb.ReadArtifactResponse.FromString(raw) == apb.ReadArtifactResponse(
        offset=offset, data=data
    )
    assert raw == apb.ReadArtifactResponse(offset=offset, data=data).SerializeToString()
    parsed_offset, view = _parse_chunk(raw)
    assert (parsed_offset, bytes(view)) == (offset, data)


@pytest.mark.parametrize(("offset", "size"), [(0, 0), (0, 7), (5, 300), (1 << 33, 1 << 20)])
def test_export_chunks_encoded_by_hand_are_the_protobuf_message(offset: int, size: int) -> None:
    from exportd.client._client import _parse_export_response
    from exportd.server.exports import Chunk
    from exportd.server.servicer import _event_to_proto

    data = bytes(i % 253 for i in range(size))
    raw = _event_to_proto(Chunk(offset, data))
    assert isinstance(raw, bytes)
    expected = epb.ExportResponse(chunk=epb.FileChunk(offset=offset, data=data))
    assert epb.ExportResponse.FromString(raw) == expected
    parsed = _parse_export_response(raw)
    assert isinstance(parsed, tuple) and (parsed[0], bytes(parsed[1])) == (offset, data)
    other = epb.ExportResponse(accepted=epb.ExportAccepted(job_id="job_x")).SerializeToString()
    assert _parse_export_response(other) == epb.ExportResponse.FromString(other)


def _ipc_of(table: Any) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("piece_size", [1 << 10, 64 << 10, 2 << 20])
def test_sdk_messages_carry_the_ipc_stream_exactly(piece_size: int) -> None:
    """The SDK's data messages, cut and grouped from pyarrow's own buffers (views, not copies),
    are all exactly ``piece_size`` but the last and concatenate to the very IPC stream pyarrow
    writes: buffers cut across messages, sliced arrays whose offsets pyarrow rewrites."""
    import pyarrow as pa
    from exportd.client import ExportClient
    from exportd.client._client import _data_message
    from support import reference_table

    whole = pa.Table.from_batches(reference_table(30_000).to_batches(max_chunksize=7_000))
    sliced = whole.slice(1_234, 20_000)  # buffers with offsets: pyarrow writes new ones
    big = pa.table({"n": pa.array(range(600_000), pa.int64())})  # one 4.8 MB buffer
    for table in (whole, sliced, big):
        client = ExportClient("127.0.0.1:1", piece_size=piece_size)
        try:
            spec = epb.ExportSpec(format=fpb.FORMAT_ARROW, file_name="x.arrow")
            messages = list(client._requests(spec, table.schema, iter(table.to_batches())))
        finally:
            client.close()
        assert messages[0] == epb.ExportRequest(spec=spec)
        assert messages[-1] == epb.ExportRequest(end=epb.ExportEnd())
        pieces = []
        for raw in messages[1:-1]:
            assert isinstance(raw, bytes) and len(raw) <= 8 << 20
            parsed = parse_export_request(raw)
            assert isinstance(parsed, DataPiece)
            pieces.append(bytes(parsed.data))
            assert raw == _data_message([bytes(parsed.data)])
        assert all(len(p) == piece_size for p in pieces[:-1])
        assert 0 < len(pieces[-1]) <= piece_size
        stream = b"".join(pieces)
        assert stream == _ipc_of(table)
        assert pa.ipc.open_stream(stream).read_all().equals(table)


@pytest.mark.parametrize("bad", [0, -1, 8 << 20])
def test_piece_size_outside_the_message_limit_is_refused(bad: int) -> None:
    from exportd.client import ExportClient

    with pytest.raises(ValueError, match="piece_size"):
        ExportClient("127.0.0.1:1", piece_size=bad)


def test_largest_piece_size_fits_the_servers_message_limit(make_server: Any) -> None:
    """Messages of the largest allowed piece reach a real server with its default 8 MiB limit."""
    import pyarrow as pa
    from exportd.client import ExportClient
    from exportd.client._client import _MAX_PIECE
    from support import reference_table

    table = reference_table(150_000)  # ~11 MB of IPC: one full message and a partial one
    server = make_server()
    with ExportClient(server.target, piece_size=_MAX_PIECE) as client:
        result = client.export(table, "arrow")
    assert result.data is not None
    assert pa.ipc.open_file(pa.py_buffer(result.data)).read_all().equals(table)
