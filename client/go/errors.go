package exportd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is a failed call as the server reported it: the gRPC status code, its message, and the
// machine-readable reason from google.rpc.ErrorInfo (e.g. "QUEUE_FULL", "MALFORMED_ARROW").
type Error struct {
	// Code is the gRPC status code, e.g. codes.NotFound or codes.ResourceExhausted.
	Code codes.Code
	// Message is the server's sentence for a person.
	Message string
	// Reason is google.rpc.ErrorInfo.reason; empty when the server sent no ErrorInfo.
	Reason string
	// Domain is google.rpc.ErrorInfo.domain.
	Domain string
	// Metadata is google.rpc.ErrorInfo.metadata.
	Metadata map[string]string
	// RetryDelay is google.rpc.RetryInfo.retry_delay: how long to wait before retrying a
	// RESOURCE_EXHAUSTED call. Zero when the server sent no RetryInfo.
	RetryDelay time.Duration
	// HasRetryInfo tells a zero RetryDelay sent by the server from an absent RetryInfo.
	HasRetryInfo bool

	status *status.Status
}

func (e *Error) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("exportd: %s (%s): %s", e.Code, e.Reason, e.Message)
	}
	return fmt.Sprintf("exportd: %s: %s", e.Code, e.Message)
}

// GRPCStatus returns the original status, so status.FromError and status.Code see through Error.
func (e *Error) GRPCStatus() *status.Status { return e.status }

// ErrChecksumMismatch is returned (wrapped) when received bytes do not hash to the SHA-256 the
// server reported. A partial file left by Fetch is removed in that case.
var ErrChecksumMismatch = errors.New("exportd: sha256 of the received file does not match the server's")

// fromRPC turns an error of a gRPC call into *Error; other errors pass through.
func fromRPC(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return err
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		switch {
		case errors.Is(err, context.Canceled):
			st = status.New(codes.Canceled, err.Error())
		case errors.Is(err, context.DeadlineExceeded):
			st = status.New(codes.DeadlineExceeded, err.Error())
		default:
			return err
		}
	}
	e := &Error{Code: st.Code(), Message: st.Message(), status: st}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			e.Reason, e.Domain, e.Metadata = d.GetReason(), d.GetDomain(), d.GetMetadata()
		case *errdetails.RetryInfo:
			e.HasRetryInfo = true
			e.RetryDelay = d.GetRetryDelay().AsDuration()
		}
	}
	return e
}

// jobError turns the JobError of a failed or cancelled job into *Error.
func jobError(code int32, message, reason string) *Error {
	c := codes.Code(uint32(code)) //nolint:gosec // gRPC codes are small non-negative numbers
	return &Error{Code: c, Message: message, Reason: reason, status: status.New(c, message)}
}
