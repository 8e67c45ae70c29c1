import { createHash } from "node:crypto";
import { open, stat, truncate, unlink } from "node:fs/promises";
import { createReadStream } from "node:fs";

import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { createClient, Code, type Client, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { RecordBatchStreamWriter, type RecordBatch, type Table } from "apache-arrow";

import {
  Delivery,
  ExportService,
  JobState,
  type ExportAccepted,
  type ExportCompleted,
  type ExportRequestSchema,
  type ExportSpecSchema,
  type ExportWarning,
  type Job,
  type Progress,
} from "./gen/exportd/v1/export_service_pb.js";
import { ArtifactService, type Artifact } from "./gen/exportd/v1/artifact_service_pb.js";
import type { Format } from "./gen/exportd/v1/formats_pb.js";
import { ChecksumMismatchError, ExportdError, fromRpc } from "./errors.js";

/** Most Arrow bytes sent in one message, well under gRPC's default 4 MiB receive limit. */
const MAX_DATA_MESSAGE = 1 << 20;

/** What to make and how to deliver it. Only `format` is required. */
export interface ExportOptions {
  /** Format of the file. */
  format: Format;
  /** The format's options, e.g. `{ case: "csv", value: { delimiter: ";" } }`. */
  formatOptions?: MessageInitShape<typeof ExportSpecSchema>["options"];
  /** Delivery of the file. Default STREAM. */
  delivery?: Delivery;
  /** File name reported back and used for a kept artifact. */
  fileName?: string;
  /** Queue priority, -100..100; higher runs first. */
  priority?: number;
  /** A repeated requestId returns the existing job (idempotent retries). */
  requestId?: string;
  /** Columns to write, in order, optionally renamed; empty writes all. */
  columns?: { source: string; header?: string; numberFormat?: string }[];
  /** IANA time zone that zoned timestamps are shown in. Default "UTC". */
  timezone?: string;
  /** Text written for nulls in CSV, TSV and PDF. */
  nullText?: string;
  /** Rows the client will send, when known: gives progress a fraction and an ETA. */
  expectedRows?: number;
  /** Life of a kept artifact in seconds; default the server's TTL. */
  ttlSeconds?: number;
  /** Receives the file's bytes in order when the delivery streams them (awaited). */
  output?: (data: Uint8Array) => void | Promise<void>;
  /** Called once with the job id and queue position. */
  onAccepted?: (accepted: ExportAccepted) => void;
  /** Called with every progress event, in order. */
  onProgress?: (progress: Progress) => void;
  /** Aborts the call (the server sees a cancelled RPC). */
  signal?: AbortSignal;
}

/** A finished export, as the server's completed event reports it. */
export interface ExportResult {
  jobId: string;
  /** Handle of the kept artifact; "" when the delivery keeps nothing. */
  handle: string;
  sizeBytes: number;
  /** Lower-case hex SHA-256 of the file. */
  sha256: string;
  rows: number;
  mediaType: string;
  fileName: string;
  warnings: ExportWarning[];
  /** When a kept artifact expires. */
  expiresAt?: Date;
  /**
   * File bytes that reached `output`. When the delivery streams, it equals sizeBytes and the
   * bytes hash to sha256 (otherwise the export fails with ChecksumMismatchError).
   */
  streamed: number;
}

/** What fetch() did. */
export interface FetchResult {
  artifact: Artifact;
  /** Size of the partial file that was kept and resumed (0 for a fresh download). */
  resumedFrom: number;
  /** Bytes received by this call. */
  downloaded: number;
}

function resultOf(c: ExportCompleted, streamed = 0): ExportResult {
  return {
    jobId: c.jobId,
    handle: c.handle,
    sizeBytes: Number(c.sizeBytes),
    sha256: c.sha256,
    rows: Number(c.rows),
    mediaType: c.mediaType,
    fileName: c.fileName,
    warnings: c.warnings,
    ...(c.expiresAt ? { expiresAt: timestampDate(c.expiresAt) } : {}),
    streamed,
  };
}

type Request = MessageInitShape<typeof ExportRequestSchema>;

/**
 * Requests handed to the transport one at a time; push() resolves once the transport asked for
 * the next message, so a writer feels HTTP/2 flow control.
 */
class RequestQueue implements AsyncIterable<Request> {
  private items: { value: Request; taken: () => void; failed: (e: unknown) => void }[] = [];
  /** The message the transport holds now; settled when it asks for the next or the call ends. */
  private current: { taken: () => void; failed: (e: unknown) => void } | undefined;
  private waiter: (() => void) | undefined;
  private ended = false;
  private error: unknown;

  push(value: Request): Promise<void> {
    if (this.error !== undefined) return Promise.reject(this.error);
    if (this.ended) return Promise.reject(new Error("exportd: the export's data was already ended"));
    return new Promise((taken, failed) => {
      this.items.push({ value, taken, failed });
      this.wake();
    });
  }

  end(): void {
    this.ended = true;
    this.wake();
  }

  fail(err: unknown): void {
    this.error ??= err;
    this.ended = true;
    for (const item of this.items.splice(0)) item.failed(err);
    this.current?.failed(err);
    this.current = undefined;
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Request> {
    for (;;) {
      const item = this.items.shift();
      if (item) {
        this.current = item;
        try {
          yield item.value;
        } finally {
          this.current = undefined;
          item.taken();
        }
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((r) => (this.waiter = r));
    }
  }
}

/**
 * One export in flight: write Arrow IPC stream bytes, then end(), then await `result`. It lets a
 * caller pace the data, learn the job id early (`accepted`), or cancel.
 */
export class ExportCall {
  /** The server's accepted event; rejects if the export fails first. */
  readonly accepted: Promise<ExportAccepted>;
  /** The finished export; rejects with ExportdError or ChecksumMismatchError. */
  readonly result: Promise<ExportResult>;
  private readonly queue = new RequestQueue();
  private readonly abortController = new AbortController();

  constructor(client: Client<typeof ExportService>, opts: ExportOptions) {
    let accept!: (a: ExportAccepted) => void;
    let refuse!: (e: unknown) => void;
    this.accepted = new Promise((resolve, reject) => {
      accept = resolve;
      refuse = reject;
    });
    opts.signal?.addEventListener("abort", () => this.abort());
    void this.queue.push({ kind: { case: "spec", value: specOf(opts) } }).catch(() => undefined);
    this.result = this.receive(client, opts, accept).catch((err: unknown) => {
      const e = fromRpc(err);
      this.queue.fail(e);
      refuse(e);
      throw e;
    });
    this.accepted.catch(() => undefined);
    this.result.catch(() => undefined);
  }

  private async receive(
    client: Client<typeof ExportService>,
    opts: ExportOptions,
    accept: (a: ExportAccepted) => void,
  ): Promise<ExportResult> {
    const hash = createHash("sha256");
    let written = 0;
    let result: ExportResult | undefined;
    for await (const msg of client.export(this.queue, { signal: this.abortController.signal })) {
      switch (msg.kind.case) {
        case "accepted":
          accept(msg.kind.value);
          opts.onAccepted?.(msg.kind.value);
          break;
        case "progress":
          opts.onProgress?.(msg.kind.value);
          break;
        case "chunk": {
          const chunk = msg.kind.value;
          if (Number(chunk.offset) !== written) {
            throw new ExportdError(Code.DataLoss, `chunk at offset ${chunk.offset}, expected ${written}`);
          }
          hash.update(chunk.data);
          await opts.output?.(chunk.data);
          written += chunk.data.length;
          break;
        }
        case "completed":
          result = resultOf(msg.kind.value, written);
          break;
      }
    }
    if (!result) throw new ExportdError(Code.Internal, "export stream ended without a completed event");
    if (opts.delivery !== Delivery.HANDLE) {
      const got = hash.digest("hex");
      if (written !== result.sizeBytes || got !== result.sha256) {
        throw new ChecksumMismatchError(
          `exportd: received ${written} bytes with sha256 ${got}, server reported ${result.sizeBytes} with ${result.sha256}`,
        );
      }
    }
    return result;
  }

  /** Sends Arrow IPC stream bytes; resolves when the transport took them (flow control). */
  async write(data: Uint8Array): Promise<void> {
    for (let at = 0; at < data.length; at += MAX_DATA_MESSAGE) {
      const piece = data.subarray(at, Math.min(data.length, at + MAX_DATA_MESSAGE));
      await this.queue.push({ kind: { case: "data", value: { arrowIpc: piece } } });
    }
  }

  /** Marks the end of the data: the server finishes the file. */
  async end(): Promise<void> {
    const sent = this.queue.push({ kind: { case: "end", value: {} } });
    this.queue.end();
    await sent;
  }

  /** Asks the server to stop; `result` then rejects with ExportdError code Canceled. */
  async cancel(reason = ""): Promise<void> {
    const sent = this.queue.push({ kind: { case: "cancel", value: { reason } } });
    this.queue.end();
    await sent;
  }

  /** Drops the call without telling the server why. */
  abort(): void {
    this.abortController.abort();
  }
}

function specOf(o: ExportOptions): MessageInitShape<typeof ExportSpecSchema> {
  return {
    format: o.format,
    ...(o.formatOptions ? { options: o.formatOptions } : {}),
    delivery: o.delivery ?? Delivery.STREAM,
    fileName: o.fileName ?? "",
    priority: o.priority ?? 0,
    requestId: o.requestId ?? "",
    columns: o.columns ?? [],
    timezone: o.timezone ?? "",
    ...(o.nullText !== undefined ? { nullText: o.nullText } : {}),
    expectedRows: BigInt(o.expectedRows ?? 0),
    ...(o.ttlSeconds ? { ttl: { seconds: BigInt(Math.floor(o.ttlSeconds)), nanos: 0 } } : {}),
  };
}

/** Options of a client. */
export interface ClientOptions {
  /** A transport to use instead of a plaintext gRPC connection to the target. */
  transport?: Transport;
}

/**
 * Client of one exportd server over one HTTP/2 connection (gRPC). Safe to share: many exports
 * may run at once. close() ends the connection.
 */
export class ExportClient {
  /** The generated ExportService client, for calls the wrapper does not cover. */
  readonly exports: Client<typeof ExportService>;
  /** The generated ArtifactService client. */
  readonly artifacts: Client<typeof ArtifactService>;
  private readonly session: Http2SessionManager | undefined;

  /** target is "host:port" or a URL such as "http://host:port". */
  constructor(target: string, options: ClientOptions = {}) {
    let transport = options.transport;
    if (!transport) {
      const baseUrl = /^[a-z]+:\/\//.test(target) ? target : `http://${target}`;
      this.session = new Http2SessionManager(baseUrl);
      transport = createGrpcTransport({ baseUrl, sessionManager: this.session });
    }
    this.exports = createClient(ExportService, transport);
    this.artifacts = createClient(ArtifactService, transport);
  }

  /** Ends the connection this client opened. */
  close(): void {
    this.session?.abort();
  }

  /** Sends the spec and returns the export in flight. */
  startExport(opts: ExportOptions): ExportCall {
    return new ExportCall(this.exports, opts);
  }

  /**
   * Streams Arrow IPC stream bytes (schema, then record batches) and resolves with the finished
   * export. With a streaming delivery the file's bytes go to opts.output and are checked against
   * the server's size and SHA-256.
   */
  async export(data: Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>, opts: ExportOptions): Promise<ExportResult> {
    const call = this.startExport(opts);
    try {
      for await (const piece of data instanceof Uint8Array ? [data] : data) {
        await call.write(piece);
      }
      await call.end();
    } catch {
      // The call's own error (the server's status) is the one to report.
    }
    return call.result;
  }

  /** Exports an Arrow JS Table or a (possibly async) sequence of record batches. */
  async exportTable(input: Table | Iterable<RecordBatch> | AsyncIterable<RecordBatch>, opts: ExportOptions): Promise<ExportResult> {
    const writer = new RecordBatchStreamWriter();
    const encoding = Promise.resolve(writer.writeAll(input as Table));
    const [result] = await Promise.all([this.export(writer, opts), encoding]);
    return result;
  }

  /**
   * Follows a job, possibly started elsewhere, to its end: resolves with its result, or rejects
   * with ExportdError carrying the job's code and reason. A finished job resolves at once.
   */
  async watch(jobId: string, onProgress?: (p: Progress) => void, signal?: AbortSignal): Promise<ExportResult> {
    try {
      for await (const ev of this.exports.watchJob({ jobId }, signal ? { signal } : {})) {
        switch (ev.event.case) {
          case "progress":
            onProgress?.(ev.event.value);
            break;
          case "completed":
            return resultOf(ev.event.value);
          case "failed":
            throw new ExportdError(ev.event.value.code as Code, ev.event.value.message, ev.event.value.reason);
        }
      }
    } catch (err) {
      throw fromRpc(err);
    }
    throw new ExportdError(Code.Internal, "watch ended before the job did");
  }

  /** Cancels a queued or running job from any connection; returns the job after the call. */
  async cancel(jobId: string, reason = ""): Promise<Job | undefined> {
    return (await this.call(() => this.exports.cancelJob({ jobId, reason }))).job;
  }

  /** A job's current state. */
  async getJob(jobId: string): Promise<Job | undefined> {
    return (await this.call(() => this.exports.getJob({ jobId }))).job;
  }

  /** One page of jobs, newest first, and the next page's token ("" on the last). */
  async listJobs(pageSize = 0, pageToken = "", states: JobState[] = []): Promise<{ jobs: Job[]; nextPageToken: string }> {
    const resp = await this.call(() => this.exports.listJobs({ pageSize, pageToken, states }));
    return { jobs: resp.jobs, nextPageToken: resp.nextPageToken };
  }

  /** A kept file's metadata; NOT_FOUND for an unknown or expired handle. */
  async stat(handle: string): Promise<Artifact> {
    const resp = await this.call(() => this.artifacts.getArtifact({ handle }));
    if (!resp.artifact) throw new ExportdError(Code.Internal, "GetArtifact returned no artifact");
    return resp.artifact;
  }

  /** Removes a kept file at once. */
  async delete(handle: string): Promise<void> {
    await this.call(() => this.artifacts.deleteArtifact({ handle }));
  }

  /**
   * Passes the bytes of a kept file from offset (at most limit; 0 reads to the end) to sink, in
   * order, and resolves with their count. OUT_OF_RANGE past the end.
   */
  async read(handle: string, offset: number, limit: number, sink: (data: Uint8Array) => void | Promise<void>): Promise<number> {
    let n = 0;
    try {
      for await (const chunk of this.artifacts.readArtifact({ handle, offset: BigInt(offset), limit: BigInt(limit) })) {
        if (Number(chunk.offset) !== offset + n) {
          throw new ExportdError(Code.DataLoss, `chunk at offset ${chunk.offset}, expected ${offset + n}`);
        }
        await sink(chunk.data);
        n += chunk.data.length;
      }
    } catch (err) {
      throw fromRpc(err);
    }
    return n;
  }

  /**
   * Downloads a kept file to path, resuming when path holds a prefix of it, then checks the whole
   * file against the server's SHA-256: on a mismatch path is removed and ChecksumMismatchError
   * thrown. After a network error path keeps what arrived, so fetching again resumes.
   */
  async fetch(handle: string, path: string): Promise<FetchResult> {
    const artifact = await this.stat(handle);
    const size = Number(artifact.sizeBytes);
    let have = await stat(path).then((s) => s.size, () => -1);
    if (have < 0) {
      await (await open(path, "w")).close();
      have = 0;
    }
    if (have > size) {
      await truncate(path, 0);
      have = 0;
    }
    const hash = createHash("sha256");
    if (have > 0) {
      for await (const piece of createReadStream(path, { start: 0, end: have - 1 })) hash.update(piece as Buffer);
    }
    const file = await open(path, "r+");
    let downloaded = 0;
    try {
      if (have < size) {
        downloaded = await this.read(handle, have, 0, async (data) => {
          await file.write(data, 0, data.length, have + downloaded);
          hash.update(data);
          downloaded += data.length;
        });
      }
      await file.sync();
    } finally {
      await file.close();
    }
    const got = hash.digest("hex");
    if (got !== artifact.sha256) {
      await unlink(path).catch(() => undefined);
      throw new ChecksumMismatchError(`exportd: ${path} has sha256 ${got}, server reported ${artifact.sha256}`);
    }
    return { artifact, resumedFrom: have, downloaded };
  }

  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw fromRpc(err);
    }
  }
}
