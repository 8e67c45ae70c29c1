// ExportdError from a real ConnectError carrying google.rpc details encoded as on the wire.
import { test } from "node:test";
import assert from "node:assert/strict";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";

import { ExportdError, codeName, codeOf } from "../src/index.js";
import { fromRpc } from "../src/errors.js";

test("fromRpc reads ErrorInfo and RetryInfo", () => {
  const entry = new BinaryWriter().tag(1, 2).string("queue").tag(2, 2).string("0").finish();
  const errorInfo = new BinaryWriter().tag(1, 2).string("QUEUE_FULL").tag(2, 2).string("exportd").tag(3, 2).bytes(entry).finish();
  const duration = new BinaryWriter().tag(1, 0).int64(1).tag(2, 0).int32(500_000_000).finish();
  const retryInfo = new BinaryWriter().tag(1, 2).bytes(duration).finish();
  const err = new ConnectError("queue full", Code.ResourceExhausted);
  // As the gRPC transport stores details parsed from grpc-status-details-bin.
  err.details.push({ type: "google.rpc.ErrorInfo", value: errorInfo }, { type: "google.rpc.RetryInfo", value: retryInfo });
  const e = fromRpc(err);
  assert.ok(e instanceof ExportdError);
  assert.equal(e.code, Code.ResourceExhausted);
  assert.equal(e.codeName, "RESOURCE_EXHAUSTED");
  assert.equal(e.reason, "QUEUE_FULL");
  assert.deepEqual(e.metadata, { queue: "0" });
  assert.equal(e.retryDelayMs, 1500);
});

test("code names follow gRPC spelling", () => {
  assert.equal(codeName(Code.Canceled), "CANCELLED");
  assert.equal(codeName(Code.InvalidArgument), "INVALID_ARGUMENT");
  assert.equal(codeOf("CANCELLED"), Code.Canceled);
  assert.equal(codeOf("NOT_FOUND"), Code.NotFound);
});
