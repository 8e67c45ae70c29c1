"""A bare grpcio server: the transport ceiling for exportd's upload and download rows.

Run as its own process (``python bench/grpc_ceiling_server.py``); it prints ``ceiling listening
on PORT`` and serves until killed. Same grpcio, same message limits (8 MiB) and the same kind of
thread pool as ``exportd serve``, and nothing else: no protobuf in the raw variant, no Arrow
decoding, no files kept.

Methods of the generic service ``bench.Ceiling``:

- ``UploadRaw`` (client stream of raw bytes): counts the bytes; answers their total as ASCII.
- ``DownloadRaw`` (server stream of raw bytes): the request is ``"CHUNK PATH"``; streams the
  file's bytes in messages of ``CHUNK`` bytes, read unbuffered from the file as ReadArtifact
  does.
- ``UploadMessage`` / ``DownloadMessage``: the same with every message a protobuf message of one
  ``bytes`` field (``google.protobuf.BytesValue``), to show what the message layer costs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
from google.protobuf.wrappers_pb2 import BytesValue

SERVICE = "bench.Ceiling"
MAX_MESSAGE = 8 << 20


def _identity(data: bytes) -> bytes:
    return data


def _upload_raw(requests: Iterator[bytes], context: Any) -> bytes:
    return str(sum(len(r) for r in requests)).encode()


def _upload_message(requests: Iterator[BytesValue], context: Any) -> BytesValue:
    return BytesValue(value=str(sum(len(r.value) for r in requests)).encode())


def _file_chunks(request: bytes) -> Iterator[bytes]:
    chunk, path = request.decode().split(" ", 1)
    size = int(chunk)
    with open(path, "rb", buffering=0) as f:
        while data := f.read(size):
            yield data


def _download_raw(request: bytes, context: Any) -> Iterator[bytes]:
    yield from _file_chunks(request)


def _download_message(request: BytesValue, context: Any) -> Iterator[BytesValue]:
    for data in _file_chunks(request.value):
        yield BytesValue(value=data)


def handler() -> grpc.GenericRpcHandler:
    """The generic handler of ``bench.Ceiling``."""
    raw: dict[str, Callable[..., Any]] = {
        "request_deserializer": _identity,
        "response_serializer": _identity,
    }
    message: dict[str, Callable[..., Any]] = {
        "request_deserializer": BytesValue.FromString,
        "response_serializer": BytesValue.SerializeToString,
    }
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "UploadRaw": grpc.stream_unary_rpc_method_handler(_upload_raw, **raw),
            "DownloadRaw": grpc.unary_stream_rpc_method_handler(_download_raw, **raw),
            "UploadMessage": grpc.stream_unary_rpc_method_handler(_upload_message, **message),
            "DownloadMessage": grpc.unary_stream_rpc_method_handler(_download_message, **message),
        },
    )


def main() -> None:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
        ],
    )
    server.add_generic_rpc_handlers((handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"ceiling listening on {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
