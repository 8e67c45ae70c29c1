import { Code, ConnectError } from "@connectrpc/connect";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

/**
 * A failed call as the server reported it: the gRPC status code, its message, and the
 * machine-readable reason from google.rpc.ErrorInfo (e.g. "QUEUE_FULL", "MALFORMED_ARROW"),
 * plus google.rpc.RetryInfo's delay when the server's queue is full. Callers test `code`
 * (the numeric gRPC code, also exported as `Code`) and `reason`; they never need the transport.
 */
export class ExportdError extends Error {
  override readonly name = "ExportdError";

  constructor(
    /** The gRPC status code. */
    readonly code: Code,
    /** The server's sentence for a person. */
    readonly rawMessage: string,
    /** google.rpc.ErrorInfo.reason; "" when the server sent no ErrorInfo. */
    readonly reason: string = "",
    /** google.rpc.ErrorInfo.metadata. */
    readonly metadata: Record<string, string> = {},
    /** google.rpc.RetryInfo.retry_delay in milliseconds; undefined when absent. */
    readonly retryDelayMs?: number,
    options?: { cause?: unknown },
  ) {
    super(`exportd: ${codeName(code)}${reason ? ` (${reason})` : ""}: ${rawMessage}`, options);
  }

  /** The code's canonical name, e.g. "NOT_FOUND". */
  get codeName(): string {
    return codeName(this.code);
  }
}

/** Thrown (as the error itself) when received bytes do not hash to the server's SHA-256. */
export class ChecksumMismatchError extends Error {
  override readonly name = "ChecksumMismatchError";
}

/** "NOT_FOUND" for Code.NotFound, as gRPC spells codes. */
export function codeName(code: Code): string {
  if (code === Code.Canceled) return "CANCELLED";
  return (Code[code] ?? String(code)).replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** The Code of a canonical name such as "RESOURCE_EXHAUSTED". */
export function codeOf(name: string): Code {
  for (const [key, value] of Object.entries(Code)) {
    if (typeof value === "number" && codeName(value) === name) return value;
  }
  throw new Error(`unknown gRPC code ${name}`);
}

/** Turns any error of a call into ExportdError; other errors pass through. */
export function fromRpc(err: unknown): unknown {
  if (err instanceof ExportdError || !(err instanceof ConnectError)) return err;
  let reason = "";
  let metadata: Record<string, string> = {};
  let retryDelayMs: number | undefined;
  for (const d of err.details) {
    if (!("type" in d) || typeof d.type !== "string" || !(d.value instanceof Uint8Array)) continue;
    if (d.type === "google.rpc.ErrorInfo") ({ reason, metadata } = decodeErrorInfo(d.value));
    if (d.type === "google.rpc.RetryInfo") retryDelayMs = decodeRetryDelayMs(d.value);
  }
  return new ExportdError(err.code, err.rawMessage, reason, metadata, retryDelayMs, { cause: err });
}

// google.rpc.ErrorInfo {string reason = 1; string domain = 2; map<string, string> metadata = 3;}
// decoded by hand: the contract does not import google/rpc, so no generated schema exists.
function decodeErrorInfo(bytes: Uint8Array): { reason: string; metadata: Record<string, string> } {
  const r = new BinaryReader(bytes);
  let reason = "";
  const metadata: Record<string, string> = {};
  while (r.pos < r.len) {
    const [field, wire] = r.tag();
    if (field === 1 && wire === WireType.LengthDelimited) {
      reason = r.string();
    } else if (field === 3 && wire === WireType.LengthDelimited) {
      const entry = new BinaryReader(r.bytes());
      let key = "";
      let value = "";
      while (entry.pos < entry.len) {
        const [f, w] = entry.tag();
        if (f === 1 && w === WireType.LengthDelimited) key = entry.string();
        else if (f === 2 && w === WireType.LengthDelimited) value = entry.string();
        else entry.skip(w, f);
      }
      metadata[key] = value;
    } else {
      r.skip(wire, field);
    }
  }
  return { reason, metadata };
}

// google.rpc.RetryInfo {google.protobuf.Duration retry_delay = 1;}, Duration {int64 seconds = 1; int32 nanos = 2;}
function decodeRetryDelayMs(bytes: Uint8Array): number {
  const r = new BinaryReader(bytes);
  let ms = 0;
  while (r.pos < r.len) {
    const [field, wire] = r.tag();
    if (field === 1 && wire === WireType.LengthDelimited) {
      const d = new BinaryReader(r.bytes());
      while (d.pos < d.len) {
        const [f, w] = d.tag();
        if (f === 1 && w === WireType.Varint) ms += Number(d.int64()) * 1000;
        else if (f === 2 && w === WireType.Varint) ms += d.int32() / 1e6;
        else d.skip(w, f);
      }
    } else {
      r.skip(wire, field);
    }
  }
  return ms;
}
