// Runs tests/conformance/scenarios.json: servers, the table as Arrow IPC, and file readers.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, openSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { inflateRawSync } from "node:zlib";
import assert from "node:assert/strict";

import { Bool, Field, Float64, Int64, Schema, Table, Utf8, tableFromIPC, tableToIPC, vectorFromArray, makeData, RecordBatch, Struct, type Vector } from "apache-arrow";
import { parquetReadObjects } from "hyparquet";
import { compressors } from "hyparquet-compressors";

export interface Suite {
  servers: Record<string, { flags: string[]; target_env: string }>;
  table: { columns: { name: string; type: string }[]; rows: unknown[][]; batch_rows: number };
  formats: Record<string, { media_type: string; suffix: string; content: string }>;
  scenarios: Scenario[];
}

export interface Scenario {
  name: string;
  kind: string;
  server: string;
  format?: string;
  delivery?: string;
  via?: string;
  options?: Record<string, unknown>;
  data_utf8?: string;
  handle?: string;
  offset_past_end?: number;
  prefix_fraction?: number;
  expect_job_state?: string;
  watch_progress_reaches_one?: boolean;
  expect_error?: { code: string; reason?: string; retry_info?: boolean };
}

export function repoRoot(): string {
  let dir = process.cwd();
  for (;;) {
    if (existsSync(join(dir, "tests", "conformance", "scenarios.json"))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error("tests/conformance/scenarios.json not found above the working directory");
    dir = parent;
  }
}

export function loadSuite(): Suite {
  return JSON.parse(readFileSync(join(repoRoot(), "tests", "conformance", "scenarios.json"), "utf8")) as Suite;
}

/** Servers by name: the one target_env names, else one this process starts (once). */
export class Servers {
  private targets = new Map<string, Promise<string>>();
  private procs: { proc: ChildProcess; dir: string }[] = [];

  constructor(private readonly suite: Suite) {}

  target(name: string): Promise<string> {
    let t = this.targets.get(name);
    if (!t) {
      t = this.start(name);
      this.targets.set(name, t);
    }
    return t;
  }

  private async start(name: string): Promise<string> {
    const conf = this.suite.servers[name];
    if (!conf) throw new Error(`unknown server ${name}`);
    const env = process.env[conf.target_env];
    if (env) return env;
    const bin = process.env.EXPORTD_BIN ?? join(repoRoot(), ".venv", "bin", "exportd");
    if (!existsSync(bin)) throw new Error(`no server: ${conf.target_env} unset and ${bin} missing`);
    const dir = mkdtempSync(join(tmpdir(), "exportd-ts-conformance-"));
    const log = openSync(join(dir, "server.log"), "w");
    const proc = spawn(bin, ["serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", dir, ...conf.flags], {
      stdio: ["ignore", "pipe", log],
    });
    this.procs.push({ proc, dir });
    const lines = createInterface({ input: proc.stdout! });
    return await new Promise<string>((ok, fail) => {
      const timer = setTimeout(() => fail(new Error(`${bin} did not print its address within 30s`)), 30_000);
      proc.once("exit", (code) => fail(new Error(`${bin} exited with ${code}: ${readFileSync(join(dir, "server.log"), "utf8")}`)));
      lines.on("line", (line) => {
        const m = /listening on (\S+)/.exec(line);
        if (m?.[1]) {
          clearTimeout(timer);
          ok(m[1]);
        }
      });
    });
  }

  async stop(failed: boolean): Promise<void> {
    await Promise.all(
      this.procs.map(async ({ proc, dir }) => {
        if (proc.exitCode === null) {
          const exited = new Promise((r) => proc.once("exit", r));
          proc.kill("SIGINT");
          const timer = setTimeout(() => proc.kill("SIGKILL"), 5000);
          await exited;
          clearTimeout(timer);
        }
        if (failed) process.stderr.write(`--- server log ${dir}\n${readFileSync(join(dir, "server.log"), "utf8")}`);
        rmSync(dir, { recursive: true, force: true });
      }),
    );
  }
}

/** The suite's table as an Arrow IPC stream: held is the schema and first batch, rest the others and the end marker. */
export interface TableData {
  all: Uint8Array;
  held: Uint8Array;
  rest: Uint8Array;
}

export function buildTable(suite: Suite): TableData {
  const { columns, rows, batch_rows } = suite.table;
  const types = { int64: new Int64(), float64: new Float64(), utf8: new Utf8(), bool: new Bool() } as const;
  const schema = new Schema(columns.map((c) => new Field(c.name, types[c.type as keyof typeof types], true)));
  const batches: RecordBatch[] = [];
  for (let start = 0; start < rows.length; start += batch_rows) {
    const part = rows.slice(start, start + batch_rows);
    const children = columns.map((c, i) => {
      const values = part.map((r) => (r[i] === null ? null : c.type === "int64" ? BigInt(r[i] as number) : r[i]));
      return (vectorFromArray(values as never[], types[c.type as keyof typeof types] as never) as Vector).data[0]!;
    });
    batches.push(new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: part.length, nullCount: 0, children })));
  }
  const all = tableToIPC(new Table(schema, batches), "stream");
  // The stream of the first batch alone, without its 8-byte end marker, is a prefix of the whole.
  const first = tableToIPC(new Table(schema, batches.slice(0, 1)), "stream");
  const held = first.subarray(0, first.length - 8);
  assert.deepEqual(Buffer.from(all.subarray(0, held.length)), Buffer.from(held), "first batch is not a prefix of the stream");
  return { all, held, rest: all.subarray(held.length) };
}

type Cell = bigint | number | string | boolean | null;

function expectedRows(suite: Suite): Cell[][] {
  return suite.table.rows.map((row) =>
    row.map((v, i) => (v === null ? null : suite.table.columns[i]!.type === "int64" ? BigInt(v as number) : (v as Cell))),
  );
}

function normalise(type: string, v: unknown): Cell {
  if (v === null || v === undefined) return null;
  if (type === "int64") return BigInt(v as number | bigint);
  if (type === "float64") return Number(v);
  return v as Cell;
}

function compareRows(suite: Suite, got: unknown[][]): void {
  const want = expectedRows(suite);
  assert.equal(got.length, want.length, "row count");
  const cols = suite.table.columns;
  got.forEach((row, r) => {
    assert.deepEqual(
      row.map((v, i) => normalise(cols[i]!.type, v)),
      want[r],
      `row ${r}`,
    );
  });
}

/** RFC 4180 fields of delimited text. */
function parseDelimited(text: string, delim: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else field += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === delim) {
      row.push(field);
      field = "";
    } else if (ch === "\n" || ch === "\r") {
      if (ch === "\r" && text[i + 1] === "\n") i++;
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
    } else field += ch;
  }
  if (field !== "" || row.length > 0) rows.push([...row, field]);
  return rows;
}

function checkDelimited(suite: Suite, file: Uint8Array, delim: string): void {
  const rows = parseDelimited(new TextDecoder().decode(file).replace(/^\uFEFF/, ""), delim);
  const cols = suite.table.columns;
  assert.deepEqual(rows[0], cols.map((c) => c.name), "header");
  compareRows(
    suite,
    rows.slice(1).map((r) =>
      r.map((s, i) => {
        const t = cols[i]!.type;
        if (t === "utf8") return s;
        if (s === "") return null;
        if (t === "bool") return s.toLowerCase() === "true";
        return t === "int64" ? BigInt(s) : Number(s);
      }),
    ),
  );
}

function checkJsonl(suite: Suite, file: Uint8Array): void {
  const lines = new TextDecoder().decode(file).trimEnd().split("\n");
  compareRows(
    suite,
    lines.map((l) => {
      const obj = JSON.parse(l) as Record<string, unknown>;
      return suite.table.columns.map((c) => obj[c.name] ?? null);
    }),
  );
}

function checkArrow(suite: Suite, file: Uint8Array): void {
  const table = tableFromIPC(file);
  assert.deepEqual(table.schema.fields.map((f) => f.name), suite.table.columns.map((c) => c.name), "schema");
  const got: unknown[][] = [];
  for (const row of table) got.push(suite.table.columns.map((c) => (row as Record<string, unknown>)[c.name] ?? null));
  compareRows(suite, got);
}

async function checkParquet(suite: Suite, file: Uint8Array): Promise<void> {
  const buf = file.buffer.slice(file.byteOffset, file.byteOffset + file.byteLength) as ArrayBuffer;
  const rows = (await parquetReadObjects({ file: buf, compressors })) as Record<string, unknown>[];
  compareRows(suite, rows.map((r) => suite.table.columns.map((c) => r[c.name] ?? null)));
}

/** Entries of a zip archive, inflated, read through its central directory. */
function unzip(file: Uint8Array): Map<string, Buffer> {
  const buf = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
  const eocd = buf.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  assert.ok(eocd >= 0, "XLSX is not a zip archive (no end of central directory)");
  const count = buf.readUInt16LE(eocd + 10);
  let at = buf.readUInt32LE(eocd + 16);
  const out = new Map<string, Buffer>();
  for (let i = 0; i < count; i++) {
    assert.equal(buf.readUInt32LE(at), 0x02014b50, "bad central directory entry");
    const method = buf.readUInt16LE(at + 10);
    const size = buf.readUInt32LE(at + 20);
    const nameLen = buf.readUInt16LE(at + 28);
    const extraLen = buf.readUInt16LE(at + 30);
    const commentLen = buf.readUInt16LE(at + 32);
    const local = buf.readUInt32LE(at + 42);
    const name = buf.toString("utf8", at + 46, at + 46 + nameLen);
    const dataAt = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28);
    const raw = buf.subarray(dataAt, dataAt + size);
    out.set(name, method === 8 ? inflateRawSync(raw) : Buffer.from(raw));
    at += 46 + nameLen + extraLen + commentLen;
  }
  return out;
}

function unescapeXml(s: string): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|amp|lt|gt|quot|apos);/g, (_, e: string) =>
    e[0] === "#" ? String.fromCodePoint(e[1] === "x" ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10)) : ({ amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" } as Record<string, string>)[e]!,
  );
}

function checkXlsx(suite: Suite, file: Uint8Array): void {
  const parts = unzip(file);
  for (const p of ["[Content_Types].xml", "xl/workbook.xml"]) assert.ok(parts.has(p), `XLSX lacks ${p}`);
  const texts = new Set<string>();
  for (const [name, data] of parts) {
    if (name !== "xl/sharedStrings.xml" && !name.startsWith("xl/worksheets/")) continue;
    for (const m of data.toString("utf8").matchAll(/<t(?:\s[^>]*)?>([^<]*)<\/t>/g)) texts.add(unescapeXml(m[1]!));
  }
  suite.table.columns.forEach((c, i) => {
    assert.ok(texts.has(c.name), `XLSX lacks header ${c.name}`);
    if (c.type !== "utf8") return;
    for (const row of suite.table.rows) if (typeof row[i] === "string") assert.ok(texts.has(row[i] as string), `XLSX lacks text ${String(row[i])}`);
  });
}

function checkPdf(file: Uint8Array): void {
  const buf = Buffer.from(file);
  assert.equal(buf.subarray(0, 5).toString("latin1"), "%PDF-", "PDF header");
  assert.ok(buf.subarray(Math.max(0, buf.length - 1024)).includes("%%EOF"), "PDF trailer");
}

export async function checkContent(suite: Suite, content: string, file: Uint8Array): Promise<void> {
  switch (content) {
    case "csv":
      return checkDelimited(suite, file, ",");
    case "tsv":
      return checkDelimited(suite, file, "\t");
    case "jsonl":
      return checkJsonl(suite, file);
    case "arrow":
      return checkArrow(suite, file);
    case "parquet":
      return checkParquet(suite, file);
    case "xlsx":
      return checkXlsx(suite, file);
    case "pdf":
      return checkPdf(file);
    default:
      throw new Error(`unknown content check ${content}`);
  }
}

export const resolveRoot = (...p: string[]): string => resolve(repoRoot(), ...p);
