package exportd

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	exportdv1 "github.com/exportd/exportd/client/go/gen/exportd/v1"
)

// Names of the contract's enums and messages, so callers rarely import the generated package.
type (
	// Format is the kind of file an export produces.
	Format = exportdv1.Format
	// Delivery says how the finished file reaches the client.
	Delivery = exportdv1.Delivery
	// JobState is where a job is in its life.
	JobState = exportdv1.JobState
	// Progress is a snapshot of a job's advance.
	Progress = exportdv1.Progress
	// Job is a whole export as the server records it.
	Job = exportdv1.Job
	// Artifact is a kept file's metadata.
	Artifact = exportdv1.Artifact
)

// Formats.
const (
	FormatCSV     = exportdv1.Format_FORMAT_CSV
	FormatTSV     = exportdv1.Format_FORMAT_TSV
	FormatXLSX    = exportdv1.Format_FORMAT_XLSX
	FormatPDF     = exportdv1.Format_FORMAT_PDF
	FormatParquet = exportdv1.Format_FORMAT_PARQUET
	FormatArrow   = exportdv1.Format_FORMAT_ARROW
	FormatJSONL   = exportdv1.Format_FORMAT_JSONL
)

// Deliveries. The zero value means DeliveryStream.
const (
	DeliveryStream          = exportdv1.Delivery_DELIVERY_STREAM
	DeliveryHandle          = exportdv1.Delivery_DELIVERY_HANDLE
	DeliveryStreamAndHandle = exportdv1.Delivery_DELIVERY_STREAM_AND_HANDLE
)

// Client talks to one exportd server. It is safe for concurrent use; one Client (one HTTP/2
// connection) can run many exports at once.
type Client struct {
	conn      grpc.ClientConnInterface
	closer    io.Closer
	exports   exportdv1.ExportServiceClient
	artifacts exportdv1.ArtifactServiceClient
}

// Dial connects to the server at target ("host:port" or any gRPC target). Without options it
// uses a plaintext connection; pass grpc.WithTransportCredentials for TLS. The connection is
// made lazily, so Dial fails only on a malformed target.
func Dial(target string, opts ...grpc.DialOption) (*Client, error) {
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("exportd: dial %s: %w", target, err)
	}
	c := NewClient(conn)
	c.closer = conn
	return c, nil
}

// NewClient wraps a connection the caller owns; Close then leaves it open.
func NewClient(conn grpc.ClientConnInterface) *Client {
	return &Client{
		conn:      conn,
		exports:   exportdv1.NewExportServiceClient(conn),
		artifacts: exportdv1.NewArtifactServiceClient(conn),
	}
}

// Close closes the connection Dial opened.
func (c *Client) Close() error {
	if c.closer == nil {
		return nil
	}
	return c.closer.Close()
}

// ExportService returns the generated stub, for calls the wrapper does not cover.
func (c *Client) ExportService() exportdv1.ExportServiceClient { return c.exports }

// ArtifactService returns the generated stub, for calls the wrapper does not cover.
func (c *Client) ArtifactService() exportdv1.ArtifactServiceClient { return c.artifacts }

// GetJob returns a job's current state.
func (c *Client) GetJob(ctx context.Context, jobID string) (*Job, error) {
	resp, err := c.exports.GetJob(ctx, &exportdv1.GetJobRequest{JobId: jobID})
	if err != nil {
		return nil, fromRPC(err)
	}
	return resp.GetJob(), nil
}

// Cancel cancels a queued or running job, from any connection. Cancelling a finished job
// changes nothing; the returned Job shows the state after the call.
func (c *Client) Cancel(ctx context.Context, jobID, reason string) (*Job, error) {
	resp, err := c.exports.CancelJob(ctx, &exportdv1.CancelJobRequest{JobId: jobID, Reason: reason})
	if err != nil {
		return nil, fromRPC(err)
	}
	return resp.GetJob(), nil
}

// ListJobs returns one page of jobs, newest first, and the token of the next page ("" on the
// last). pageSize 0 takes the server's default.
func (c *Client) ListJobs(ctx context.Context, pageSize int32, pageToken string, states ...JobState) ([]*Job, string, error) {
	resp, err := c.exports.ListJobs(ctx, &exportdv1.ListJobsRequest{PageSize: pageSize, PageToken: pageToken, States: states})
	if err != nil {
		return nil, "", fromRPC(err)
	}
	return resp.GetJobs(), resp.GetNextPageToken(), nil
}

// Watch follows a job, possibly started by another client, to its end. onProgress (may be nil)
// sees every progress event. It returns the job's result when it succeeds, or *Error with the
// job's code and reason when it fails or is cancelled. A job already finished returns at once.
func (c *Client) Watch(ctx context.Context, jobID string, onProgress func(*Progress)) (*Result, error) {
	stream, err := c.exports.WatchJob(ctx, &exportdv1.WatchJobRequest{JobId: jobID})
	if err != nil {
		return nil, fromRPC(err)
	}
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil, &Error{Code: codes.Internal, Message: "watch ended before the job did"}
		}
		if err != nil {
			return nil, fromRPC(err)
		}
		switch ev := ev.GetEvent().(type) {
		case *exportdv1.WatchJobResponse_Progress:
			if onProgress != nil {
				onProgress(ev.Progress)
			}
		case *exportdv1.WatchJobResponse_Completed:
			return resultOf(ev.Completed), nil
		case *exportdv1.WatchJobResponse_Failed:
			return nil, jobError(ev.Failed.GetCode(), ev.Failed.GetMessage(), ev.Failed.GetReason())
		}
	}
}
