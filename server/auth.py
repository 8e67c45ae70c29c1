"""Bearer-token authentication: which tenant is calling.

Clients send ``authorization: Bearer <token>`` metadata. The token file maps the sha256 (hex) of
each token to a tenant name, so the file never holds a usable secret::

    # tokens.toml  (or tokens.json: {"tokens": {"<sha256 hex>": "acme"}})
    [tokens]
    "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8" = "acme"

Make an entry with ``printf %s "$TOKEN" | sha256sum``. :class:`TokenInterceptor` refuses every
call without a known token with UNAUTHENTICATED, except health checks and reflection, which stay
open so load balancers and tools can probe the server. For the calls it lets through it records
the tenant for the duration of the handler, where :meth:`TokenTable.tenant_of` (the servicers'
``tenant_of``) reads it.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc

from .errors import InvalidArgument

OPEN_SERVICES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
"""Method prefixes callable without a token."""

_tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("exportd_tenant", default=None)


def hash_token(token: str) -> str:
    """The sha256 hex digest a token file stores for ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenTable:
    """Token hashes and the tenants they stand for."""

    def __init__(self, tenants_by_hash: Mapping[str, str]) -> None:
        for digest, tenant in tenants_by_hash.items():
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
                raise InvalidArgument(
                    f"token file: {digest[:16]!r}... is not a sha256 hex digest",
                    reason="INVALID_CONFIG",
                )
            if not isinstance(tenant, str) or not tenant:
                raise InvalidArgument(
                    f"token file: the tenant of {digest[:12]}... must be a non-empty string",
                    reason="INVALID_CONFIG",
                )
        self._tenants = {d.lower(): t for d, t in tenants_by_hash.items()}

    @classmethod
    def load(cls, path: Path) -> TokenTable:
        """Read a ``.toml`` or ``.json`` token file (see the module docstring)."""
        raw = path.read_bytes()
        is_json = path.suffix.lower() == ".json"
        data: Any = json.loads(raw) if is_json else tomllib.loads(raw.decode())
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, dict) or not tokens:
            raise InvalidArgument(
                f"token file {path}: expected a non-empty 'tokens' table of sha256 hex -> tenant",
                reason="INVALID_CONFIG",
            )
        return cls(tokens)

    def __len__(self) -> int:
        return len(self._tenants)

    def tenant_for(self, token: str) -> str | None:
        """The tenant ``token`` belongs to, or None when it is unknown."""
        return self._tenants.get(hash_token(token))

    @staticmethod
    def tenant_of(context: grpc.ServicerContext) -> str:
        """The tenant the interceptor let in for the current call ("" outside one)."""
        return _tenant.get() or ""


def _bearer(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization" and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return ""
    return None


def _with_tenant(behavior: Callable[..., Any], tenant: str, streaming: bool) -> Callable[..., Any]:
    """``behavior`` run with the tenant set. For a streaming response, gRPC runs the handler's
    code at each step of its generator (and may close it from another thread), so the tenant is
    set around every step rather than across yields."""

    def call(fn: Callable[..., Any], *args: Any) -> Any:
        token = _tenant.set(tenant)
        try:
            return fn(*args)
        finally:
            _tenant.reset(token)

    if streaming:

        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            inner = call(behavior, request, context)
            while True:
                try:
                    item = call(next, inner)
                except StopIteration:
                    return
                try:
                    yield item
                except GeneratorExit:
                    call(inner.close)
                    raise

        return stream

    return lambda request, context: call(behavior, request, context)


def _refusal(message: str) -> Callable[..., Any]:
    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return refuse


_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


class TokenInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Lets a call through only with a token from ``table``; see the module docstring."""

    def __init__(self, table: TokenTable) -> None:
        self._table = table

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        handler = continuation(handler_call_details)
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        token = _bearer(handler_call_details.invocation_metadata)
        tenant = self._table.tenant_for(token) if token else None
        replaced: dict[str, Callable[..., Any]] = {}
        for kind in _KINDS:
            behavior = getattr(handler, kind)
            if behavior is None:
                continue
            if tenant is not None:
                replaced[kind] = _with_tenant(behavior, tenant, kind.endswith("_stream"))
            elif token is None:
                replaced[kind] = _refusal(
                    "this server requires a bearer token: send 'authorization: Bearer <token>' "
                    "metadata (the CLI reads EXPORTD_TOKEN)"
                )
            else:
                replaced[kind] = _refusal("the bearer token is not valid on this server")
        # The handler gRPC built is a namedtuple; swap only the behaviors.
        new: grpc.RpcMethodHandler[Any, Any] = handler._replace(**replaced)  # type: ignore[attr-defined]
        return new
