/**
 * TypeScript client of exportd: stream Apache Arrow tables in, get CSV, TSV, XLSX, PDF, Parquet,
 * Arrow or JSON Lines files back, streamed or by handle. The generated messages and services are
 * re-exported for anything the wrapper does not cover.
 */
export { ExportClient, ExportCall } from "./client.js";
export type { ClientOptions, ExportOptions, ExportResult, FetchResult } from "./client.js";
export { ChecksumMismatchError, ExportdError, codeName, codeOf } from "./errors.js";
export { Code } from "@connectrpc/connect";
export * from "./gen/exportd/v1/formats_pb.js";
export * from "./gen/exportd/v1/export_service_pb.js";
export * from "./gen/exportd/v1/artifact_service_pb.js";
