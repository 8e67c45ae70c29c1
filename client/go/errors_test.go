package exportd

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	exportdv1 "github.com/exportd/exportd/client/go/gen/exportd/v1"
)

func TestFromRPCReadsErrorInfoAndRetryInfo(t *testing.T) {
	st, err := status.New(codes.ResourceExhausted, "queue full").WithDetails(
		&errdetails.ErrorInfo{Reason: "QUEUE_FULL", Domain: "exportd", Metadata: map[string]string{"queue": "0"}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(1500 * time.Millisecond)},
	)
	if err != nil {
		t.Fatal(err)
	}
	got := fromRPC(fmt.Errorf("call: %w", st.Err()))
	var e *Error
	if !errors.As(got, &e) {
		t.Fatalf("fromRPC gave %T", got)
	}
	if e.Code != codes.ResourceExhausted || e.Reason != "QUEUE_FULL" || e.Domain != "exportd" || e.Metadata["queue"] != "0" {
		t.Errorf("got %+v", e)
	}
	if !e.HasRetryInfo || e.RetryDelay != 1500*time.Millisecond {
		t.Errorf("retry delay %v (present %v)", e.RetryDelay, e.HasRetryInfo)
	}
	if status.Code(e) != codes.ResourceExhausted {
		t.Errorf("status.Code sees %v", status.Code(e))
	}
}

func TestSpecCarriesFormatOptions(t *testing.T) {
	o := ExportOptions{Format: FormatCSV, FormatOptions: &exportdv1.CsvOptions{Delimiter: ";"}, TTL: time.Hour}
	s, err := o.spec()
	if err != nil {
		t.Fatal(err)
	}
	if s.GetCsv().GetDelimiter() != ";" || s.GetTtl().AsDuration() != time.Hour {
		t.Errorf("spec %v", s)
	}
	if _, err := (&ExportOptions{FormatOptions: "csv"}).spec(); err == nil {
		t.Error("a string as FormatOptions was accepted")
	}
}
