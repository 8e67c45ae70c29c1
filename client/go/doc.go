// Package exportd is the Go client of exportd, a gRPC service that turns Apache Arrow tables into
// files people open: CSV, TSV, XLSX, PDF, Parquet, Arrow IPC and JSON Lines.
//
// A Client streams an Arrow IPC stream (raw bytes from any io.Reader, or records from an Arrow Go
// array.RecordReader) to the server, follows the export's progress, and receives the file either
// streamed back into an io.Writer or kept on the server behind a handle that Fetch downloads,
// resuming a partial file and verifying its SHA-256.
//
//	c, err := exportd.Dial("127.0.0.1:50051")
//	if err != nil { ... }
//	defer c.Close()
//	f, _ := os.Create("table.csv")
//	res, err := c.ExportRecords(ctx, reader, exportd.ExportOptions{
//		Format: exportd.FormatCSV,
//		Output: f,
//		OnProgress: func(p *exportdv1.Progress) { log.Printf("%.0f%%", 100*p.GetFraction()) },
//	})
//
// Failures are returned as *Error, which carries the gRPC status code and the google.rpc
// ErrorInfo reason (and RetryInfo delay when the server's queue is full); test them with
// errors.As. The generated stubs live in package
// github.com/exportd/exportd/client/go/gen/exportd/v1 for anything the wrapper does not cover.
package exportd
