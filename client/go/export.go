package exportd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	exportdv1 "github.com/exportd/exportd/client/go/gen/exportd/v1"
)

// maxDataMessage bounds the Arrow bytes sent in one message, well under gRPC's default 4 MiB
// receive limit.
const maxDataMessage = 1 << 20

// ExportOptions describe one export. Only Format is required.
type ExportOptions struct {
	// Format of the file. Required.
	Format Format
	// FormatOptions, when set, is the format's options message: *exportdv1.CsvOptions (CSV and
	// TSV), *exportdv1.XlsxOptions, *exportdv1.PdfOptions, *exportdv1.ParquetOptions,
	// *exportdv1.ArrowOptions or *exportdv1.JsonLinesOptions.
	FormatOptions any
	// Delivery of the file. Default DeliveryStream.
	Delivery Delivery
	// FileName reported back and used for a kept artifact. Default "export" plus the suffix.
	FileName string
	// Priority in the server's queue, -100..100; higher runs first.
	Priority int32
	// RequestID makes retries idempotent: a repeated id returns the existing job.
	RequestID string
	// Columns selects, orders and renames columns; empty writes all.
	Columns []*exportdv1.ColumnSpec
	// Timezone (IANA) that zoned timestamps are shown in. Default "UTC".
	Timezone string
	// NullText is written for nulls in CSV, TSV and PDF when set.
	NullText *string
	// ExpectedRows, when known, gives progress a fraction and an ETA.
	ExpectedRows int64
	// TTL of a kept artifact. Zero takes the server's default.
	TTL time.Duration
	// Output receives the file's bytes in order when the delivery streams them. When nil the
	// bytes are still checked against the server's SHA-256, then dropped.
	Output io.Writer
	// OnAccepted, when set, is called once with the job id and queue position.
	OnAccepted func(*exportdv1.ExportAccepted)
	// OnProgress, when set, is called with every progress event, in order.
	OnProgress func(*Progress)
}

func (o *ExportOptions) spec() (*exportdv1.ExportSpec, error) {
	s := &exportdv1.ExportSpec{
		Format:       o.Format,
		Delivery:     o.Delivery,
		FileName:     o.FileName,
		Priority:     o.Priority,
		RequestId:    o.RequestID,
		Columns:      o.Columns,
		Timezone:     o.Timezone,
		NullText:     o.NullText,
		ExpectedRows: o.ExpectedRows,
	}
	if o.TTL > 0 {
		s.Ttl = durationpb.New(o.TTL)
	}
	switch opt := o.FormatOptions.(type) {
	case nil:
	case *exportdv1.CsvOptions:
		s.Options = &exportdv1.ExportSpec_Csv{Csv: opt}
	case *exportdv1.XlsxOptions:
		s.Options = &exportdv1.ExportSpec_Xlsx{Xlsx: opt}
	case *exportdv1.PdfOptions:
		s.Options = &exportdv1.ExportSpec_Pdf{Pdf: opt}
	case *exportdv1.ParquetOptions:
		s.Options = &exportdv1.ExportSpec_Parquet{Parquet: opt}
	case *exportdv1.ArrowOptions:
		s.Options = &exportdv1.ExportSpec_Arrow{Arrow: opt}
	case *exportdv1.JsonLinesOptions:
		s.Options = &exportdv1.ExportSpec_JsonLines{JsonLines: opt}
	default:
		return nil, fmt.Errorf("exportd: FormatOptions of type %T is not a format options message", opt)
	}
	return s, nil
}

func (o *ExportOptions) streams() bool {
	return o.Delivery != DeliveryHandle
}

// Result is a finished export, as the server's completed event reports it.
type Result struct {
	// JobID of the export.
	JobID string
	// Handle of the kept artifact; empty when the delivery keeps nothing.
	Handle string
	// SizeBytes of the file.
	SizeBytes int64
	// SHA256 of the file, lower-case hex.
	SHA256 string
	// Rows written.
	Rows int64
	// MediaType, e.g. "text/csv".
	MediaType string
	// FileName the server chose.
	FileName string
	// Warnings, one per kind of change the exporter made.
	Warnings []*exportdv1.ExportWarning
	// ExpiresAt of a kept artifact; zero when nothing is kept.
	ExpiresAt time.Time
	// Streamed is how many file bytes reached ExportOptions.Output; when the delivery streams,
	// it equals SizeBytes and those bytes hash to SHA256 (else the export returns an error).
	Streamed int64
}

func resultOf(c *exportdv1.ExportCompleted) *Result {
	r := &Result{
		JobID:     c.GetJobId(),
		Handle:    c.GetHandle(),
		SizeBytes: c.GetSizeBytes(),
		SHA256:    c.GetSha256(),
		Rows:      c.GetRows(),
		MediaType: c.GetMediaType(),
		FileName:  c.GetFileName(),
		Warnings:  c.GetWarnings(),
	}
	if c.GetExpiresAt() != nil {
		r.ExpiresAt = c.GetExpiresAt().AsTime()
	}
	return r
}

// ExportStream is one export in flight: write Arrow IPC stream bytes to it, then Close, then
// Wait for the result. It lets a caller pace the data, learn the job id early (Accepted), or
// cancel. Write and Close must not be called from several goroutines at once; Cancel, Abort,
// Accepted and Wait may be called from any goroutine.
type ExportStream struct {
	stream grpc.BidiStreamingClient[exportdv1.ExportRequest, exportdv1.ExportResponse]
	abort  context.CancelFunc
	opts   ExportOptions

	sendMu sync.Mutex

	acceptedOnce sync.Once
	acceptedCh   chan struct{}
	accepted     *exportdv1.ExportAccepted

	done   chan struct{}
	result *Result
	err    error
}

// StartExport sends the spec and returns the export in flight. The server may hold the data
// back (flow control) while the job waits in its queue.
func (c *Client) StartExport(ctx context.Context, opts ExportOptions) (*ExportStream, error) {
	spec, err := opts.spec()
	if err != nil {
		return nil, err
	}
	ctx, abort := context.WithCancel(ctx)
	stream, err := c.exports.Export(ctx)
	if err != nil {
		abort()
		return nil, fromRPC(err)
	}
	e := &ExportStream{stream: stream, abort: abort, opts: opts, acceptedCh: make(chan struct{}), done: make(chan struct{})}
	go e.receive()
	if err := e.send(&exportdv1.ExportRequest{Kind: &exportdv1.ExportRequest_Spec{Spec: spec}}); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *ExportStream) receive() {
	defer close(e.done)
	defer e.abort()
	defer e.acceptedOnce.Do(func() { close(e.acceptedCh) })
	h := sha256.New()
	var written int64
	for {
		msg, err := e.stream.Recv()
		if errors.Is(err, io.EOF) {
			if e.result == nil {
				e.err = &Error{Code: codes.Internal, Message: "export stream ended without a completed event"}
			}
			return
		}
		if err != nil {
			e.result, e.err = nil, fromRPC(err)
			return
		}
		switch k := msg.GetKind().(type) {
		case *exportdv1.ExportResponse_Accepted:
			e.acceptedOnce.Do(func() {
				e.accepted = k.Accepted
				close(e.acceptedCh)
			})
			if e.opts.OnAccepted != nil {
				e.opts.OnAccepted(k.Accepted)
			}
		case *exportdv1.ExportResponse_Progress:
			if e.opts.OnProgress != nil {
				e.opts.OnProgress(k.Progress)
			}
		case *exportdv1.ExportResponse_Chunk:
			if err := e.writeChunk(k.Chunk, h, &written); err != nil {
				e.err = err
				return
			}
		case *exportdv1.ExportResponse_Completed:
			r := resultOf(k.Completed)
			r.Streamed = written
			if err := e.verify(r, h); err != nil {
				e.err = err
				return
			}
			e.result = r
		}
	}
}

func (e *ExportStream) writeChunk(c *exportdv1.FileChunk, h hash.Hash, written *int64) error {
	if c.GetOffset() != *written {
		return &Error{Code: codes.DataLoss, Message: fmt.Sprintf("chunk at offset %d, expected %d", c.GetOffset(), *written)}
	}
	h.Write(c.GetData())
	if e.opts.Output != nil {
		if _, err := e.opts.Output.Write(c.GetData()); err != nil {
			return fmt.Errorf("exportd: writing output: %w", err)
		}
	}
	*written += int64(len(c.GetData()))
	return nil
}

func (e *ExportStream) verify(r *Result, h hash.Hash) error {
	if !e.opts.streams() {
		return nil
	}
	got := hex.EncodeToString(h.Sum(nil))
	if r.Streamed != r.SizeBytes || got != r.SHA256 {
		return fmt.Errorf("%w: received %d bytes with sha256 %s, server reported %d bytes with sha256 %s",
			ErrChecksumMismatch, r.Streamed, got, r.SizeBytes, r.SHA256)
	}
	return nil
}

func (e *ExportStream) send(req *exportdv1.ExportRequest) error {
	e.sendMu.Lock()
	err := e.stream.Send(req)
	e.sendMu.Unlock()
	if err == nil {
		return nil
	}
	// io.EOF from Send means the server ended the stream; the real status comes from Recv.
	<-e.done
	if e.err != nil {
		return e.err
	}
	return fromRPC(err)
}

// Write sends Arrow IPC stream bytes; message boundaries do not matter. It blocks while the
// server holds the data back. After the server ended the export, it returns the export's error.
func (e *ExportStream) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		piece := p[:min(len(p), maxDataMessage)]
		if err := e.send(&exportdv1.ExportRequest{Kind: &exportdv1.ExportRequest_Data{Data: &exportdv1.ExportData{ArrowIpc: piece}}}); err != nil {
			return n, err
		}
		n += len(piece)
		p = p[len(piece):]
	}
	return n, nil
}

// Close marks the end of the data: the server finishes the file. Wait returns the result.
func (e *ExportStream) Close() error {
	if err := e.send(&exportdv1.ExportRequest{Kind: &exportdv1.ExportRequest_End{End: &exportdv1.ExportEnd{}}}); err != nil {
		return err
	}
	e.sendMu.Lock()
	defer e.sendMu.Unlock()
	return e.stream.CloseSend()
}

// Cancel asks the server to stop this export; Wait then returns *Error with codes.Canceled.
func (e *ExportStream) Cancel(reason string) error {
	return e.send(&exportdv1.ExportRequest{Kind: &exportdv1.ExportRequest_Cancel{Cancel: &exportdv1.ExportCancel{Reason: reason}}})
}

// Abort drops the call without telling the server why; the server sees a cancelled RPC.
func (e *ExportStream) Abort() { e.abort() }

// Accepted waits for the server's accepted event (job id and queue position). It returns the
// export's error if the server refused it first.
func (e *ExportStream) Accepted(ctx context.Context) (*exportdv1.ExportAccepted, error) {
	select {
	case <-e.acceptedCh:
	case <-ctx.Done():
		return nil, fromRPC(ctx.Err())
	}
	if e.accepted == nil {
		<-e.done
		return nil, e.err
	}
	return e.accepted, nil
}

// Wait blocks until the export ends and returns its result or error.
func (e *ExportStream) Wait() (*Result, error) {
	<-e.done
	return e.result, e.err
}

// Done is closed when the export has ended.
func (e *ExportStream) Done() <-chan struct{} { return e.done }

// Export streams the Arrow IPC stream read from data (schema, then record batches) and returns
// the finished export. With a streaming delivery the file's bytes go to opts.Output and are
// checked against the server's size and SHA-256.
func (c *Client) Export(ctx context.Context, data io.Reader, opts ExportOptions) (*Result, error) {
	e, err := c.StartExport(ctx, opts)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 256<<10)
	for {
		n, rerr := data.Read(buf)
		if n > 0 {
			if _, err := e.Write(buf[:n]); err != nil {
				return e.Wait()
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			e.Abort()
			_, _ = e.Wait()
			return nil, fmt.Errorf("exportd: reading data: %w", rerr)
		}
	}
	if err := e.Close(); err != nil {
		return e.Wait()
	}
	return e.Wait()
}
