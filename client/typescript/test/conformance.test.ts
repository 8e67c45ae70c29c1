// The conformance scenarios of tests/conformance/scenarios.json, run by the TypeScript client
// against real servers (EXPORTD_TARGET / EXPORTD_TARGET_ONE_SLOT, or ones started here).
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { tableFromIPC } from "apache-arrow";

import {
  Code,
  Delivery,
  ExportClient,
  ExportdError,
  Format,
  JobState,
  codeOf,
  type ExportCall,
  type ExportOptions,
  type ExportResult,
  type Progress,
} from "../src/index.js";
import { Servers, buildTable, checkContent, loadSuite, type Scenario } from "./harness.js";

const suite = loadSuite();
const data = buildTable(suite);
const servers = new Servers(suite);
const clients: ExportClient[] = [];
let failed = false;

after(async () => {
  for (const c of clients) c.close();
  await servers.stop(failed);
});

async function dial(sc: Scenario): Promise<ExportClient> {
  const c = new ExportClient(await servers.target(sc.server));
  clients.push(c);
  return c;
}

const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

function concat(parts: Uint8Array[]): Uint8Array {
  return Buffer.concat(parts);
}

function options(sc: Scenario, progress?: Progress[], out?: Uint8Array[]): ExportOptions {
  const f = sc.format ? suite.formats[sc.format] : undefined;
  const o: ExportOptions = {
    format: Format[sc.format!.replace(/^FORMAT_/, "") as keyof typeof Format],
    delivery: Delivery[sc.delivery!.replace(/^DELIVERY_/, "") as keyof typeof Delivery],
    expectedRows: suite.table.rows.length,
  };
  if (f) o.fileName = sc.name + f.suffix;
  for (const name of Object.keys(sc.options ?? {})) {
    const c = { csv: "csv", xlsx: "xlsx", pdf: "pdf", parquet: "parquet", arrow: "arrow", json_lines: "jsonLines" }[name];
    if (!c) throw new Error(`unknown options ${name}`);
    o.formatOptions = { case: c, value: {} } as ExportOptions["formatOptions"];
  }
  if (progress) o.onProgress = (p) => progress.push(p);
  if (out) o.output = (d) => void out.push(Uint8Array.from(d));
  return o;
}

async function checkResult(sc: Scenario, c: ExportClient, res: ExportResult, streamed: Uint8Array): Promise<Uint8Array> {
  const f = suite.formats[sc.format!]!;
  assert.equal(res.rows, suite.table.rows.length, "completed.rows");
  assert.equal(res.mediaType, f.media_type, "completed.media_type");
  assert.equal(res.fileName, sc.name + f.suffix, "completed.file_name");
  assert.match(res.sha256, /^[0-9a-f]{64}$/, "completed.sha256");
  const streams = sc.delivery !== "DELIVERY_HANDLE";
  const keeps = sc.delivery === "DELIVERY_HANDLE" || sc.delivery === "DELIVERY_STREAM_AND_HANDLE";
  let file: Uint8Array | undefined;
  if (streams) {
    assert.equal(streamed.length, res.sizeBytes, "streamed size");
    assert.equal(sha(streamed), res.sha256, "streamed sha256");
    file = streamed;
  } else {
    assert.equal(streamed.length, 0, "HANDLE delivery streamed bytes");
  }
  assert.equal(res.handle !== "", keeps, `delivery ${sc.delivery} gave handle ${JSON.stringify(res.handle)}`);
  if (keeps) {
    const parts: Uint8Array[] = [];
    const n = await c.read(res.handle, 0, 0, (d) => void parts.push(Uint8Array.from(d)));
    const kept = concat(parts);
    assert.equal(n, res.sizeBytes, "size read by handle");
    assert.equal(sha(kept), res.sha256, "sha256 read by handle");
    if (file) assert.deepEqual(Buffer.from(kept), Buffer.from(file), "streamed and kept files differ");
    file = kept;
  }
  await checkContent(suite, f.content, file!);
  return file!;
}

/** Fractions within [0, 1] never decreasing, rows_done and state never going back; when reachOne, some events and the last at 1. */
function checkProgress(events: Progress[], reachOne: boolean): void {
  if (reachOne) assert.ok(events.length > 0, "no progress events");
  events.forEach((p, i) => {
    assert.ok(p.fraction >= 0 && p.fraction <= 1, `fraction ${p.fraction} outside [0, 1]`);
    const prev = events[i - 1];
    if (prev) {
      assert.ok(
        p.fraction >= prev.fraction && p.rowsDone >= prev.rowsDone && p.state >= prev.state,
        `progress went back: ${JSON.stringify([prev, p], (_, v: unknown) => (typeof v === "bigint" ? v.toString() : v))}`,
      );
    }
  });
  if (reachOne) assert.equal(events.at(-1)!.fraction, 1, "last progress fraction");
}

function expectError(sc: Scenario, err: unknown): ExportdError {
  assert.ok(err instanceof ExportdError, `got ${String(err)}, want ExportdError ${sc.expect_error!.code}`);
  assert.equal(err.codeName, sc.expect_error!.code, `code of ${err.message}`);
  assert.equal(err.code, codeOf(sc.expect_error!.code));
  assert.notEqual(err.reason, "", `${err.message} carries no ErrorInfo reason`);
  if (sc.expect_error!.reason) assert.equal(err.reason, sc.expect_error!.reason, "reason");
  if (sc.expect_error!.retry_info) assert.notEqual(err.retryDelayMs, undefined, `${err.message} carries no RetryInfo`);
  return err;
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  assert.fail("expected an error");
}

/** Starts an export and sends only the schema and first batch, so the job stays open. */
async function hold(sc: Scenario, c: ExportClient, progress?: Progress[], out?: Uint8Array[]): Promise<{ call: ExportCall; jobId: string }> {
  const call = c.startExport(options(sc, progress, out));
  await call.write(data.held);
  const accepted = await call.accepted;
  assert.notEqual(accepted.jobId, "", "accepted without a job id");
  return { call, jobId: accepted.jobId };
}

async function release(call: ExportCall): Promise<ExportResult> {
  try {
    await call.write(data.rest);
    await call.end();
  } catch {
    // call.result carries the server's error.
  }
  return call.result;
}

const kinds: Record<string, (sc: Scenario) => Promise<void>> = {
  async export(sc) {
    const c = await dial(sc);
    const progress: Progress[] = [];
    const out: Uint8Array[] = [];
    // Through Arrow JS: the table is re-encoded by exportTable's RecordBatchStreamWriter.
    const res = await c.exportTable(tableFromIPC(data.all), options(sc, progress, out));
    await checkResult(sc, c, res, concat(out));
    checkProgress(progress, true);
  },

  async watch(sc) {
    const [a, b] = [await dial(sc), await dial(sc)];
    const progress: Progress[] = [];
    const out: Uint8Array[] = [];
    const { call, jobId } = await hold(sc, a, progress, out);
    const watched: Progress[] = [];
    let first!: () => void;
    const firstEvent = new Promise<void>((r) => (first = r));
    const watching = b.watch(jobId, (p) => {
      watched.push(p);
      first();
    });
    watching.catch(() => undefined);
    await Promise.race([firstEvent, new Promise((r) => setTimeout(r, 2000))]); // let the watcher subscribe
    const res = await release(call);
    await checkResult(sc, a, res, concat(out));
    checkProgress(progress, true);
    const w = await watching;
    assert.deepEqual([w.jobId, w.sha256, w.sizeBytes, w.handle], [jobId, res.sha256, res.sizeBytes, res.handle], "watch result");
    checkProgress(watched, sc.watch_progress_reaches_one ?? false);
  },

  async cancel(sc) {
    const [a, b] = [await dial(sc), await dial(sc)];
    const { call, jobId } = await hold(sc, a);
    if (sc.via === "cancel_job") await b.cancel(jobId, "conformance");
    else if (sc.via === "export_cancel") await call.cancel("conformance").catch(() => undefined);
    else throw new Error(`unknown cancel via ${sc.via}`);
    expectError(sc, await rejection(call.result));
    const want = JobState[sc.expect_job_state!.replace(/^JOB_STATE_/, "") as keyof typeof JobState];
    let state: JobState | undefined;
    for (const deadline = Date.now() + 5000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 50))) {
      state = (await b.getJob(jobId))?.state;
      if (state === want) break;
    }
    assert.equal(state, want, "job state");
  },

  async resume(sc) {
    const c = await dial(sc);
    const res = await c.export(data.all, options(sc));
    assert.notEqual(res.handle, "");
    const prefix = Math.floor(res.sizeBytes * sc.prefix_fraction!);
    const dir = mkdtempSync(join(tmpdir(), "exportd-ts-resume-"));
    try {
      const path = join(dir, res.fileName);
      const parts: Uint8Array[] = [];
      const n = await c.read(res.handle, 0, prefix, (d) => void parts.push(Uint8Array.from(d)));
      assert.equal(n, prefix, "prefix length");
      writeFileSync(path, concat(parts));
      const fr = await c.fetch(res.handle, path);
      assert.deepEqual([fr.resumedFrom, fr.downloaded], [prefix, res.sizeBytes - prefix], "resumed from, downloaded");
      const file = readFileSync(path);
      assert.equal(file.length, res.sizeBytes);
      assert.equal(sha(file), res.sha256);
      await checkContent(suite, suite.formats[sc.format!]!.content, file);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },

  async read_error(sc) {
    const c = await dial(sc);
    let handle = sc.handle ?? "";
    let offset = 0;
    if (!handle) {
      const res = await c.export(data.all, options(sc));
      handle = res.handle;
      offset = res.sizeBytes + (sc.offset_past_end ?? 0);
    }
    expectError(sc, await rejection(c.read(handle, offset, 0, () => undefined)));
  },

  async export_error(sc) {
    const c = await dial(sc);
    const bytes = sc.data_utf8 !== undefined ? new TextEncoder().encode(sc.data_utf8) : data.all;
    expectError(sc, await rejection(c.export(bytes, options(sc))));
  },

  async queue_full(sc) {
    const [a, b] = [await dial(sc), await dial(sc)];
    const { call } = await hold(sc, a);
    expectError(sc, await rejection(b.export(data.all, options(sc))));
    await release(call);
    // The slot is free again: a new export runs (retrying while the server still reports the queue full).
    for (const deadline = Date.now() + 5000; ; ) {
      const out: Uint8Array[] = [];
      try {
        const res = await b.export(data.all, options(sc, undefined, out));
        await checkResult(sc, b, res, concat(out));
        return;
      } catch (err) {
        if (!(err instanceof ExportdError && err.code === Code.ResourceExhausted && Date.now() < deadline)) throw err;
        await new Promise((r) => setTimeout(r, Math.max(err.retryDelayMs ?? 0, 50)));
      }
    }
  },
};

for (const sc of suite.scenarios) {
  test(sc.name, { timeout: 60_000 }, async () => {
    const run = kinds[sc.kind];
    if (!run) throw new Error(`unknown scenario kind ${sc.kind}`);
    try {
      await run(sc);
    } catch (err) {
      failed = true;
      throw err;
    }
  });
}
