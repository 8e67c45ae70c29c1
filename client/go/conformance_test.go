package exportd_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/ipc"
	"google.golang.org/grpc/codes"

	exportd "github.com/exportd/exportd/client/go"
	exportdv1 "github.com/exportd/exportd/client/go/gen/exportd/v1"
)

func TestMain(m *testing.M) {
	code := m.Run()
	running.stop(code != 0)
	os.Exit(code)
}

// TestConformance runs tests/conformance/scenarios.json in order against real servers.
func TestConformance(t *testing.T) {
	st := loadSuite(t)
	data := buildTable(t, st)
	for _, sc := range st.Scenarios {
		t.Run(sc.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			r := &runner{t: t, st: st, sc: sc, data: data, ctx: ctx}
			r.target = running.target(t, st, sc.Server)
			r.run()
		})
	}
}

type runner struct {
	t      *testing.T
	st     *suite
	sc     scenario
	data   *tableData
	ctx    context.Context
	target string
}

func (r *runner) dial() *exportd.Client {
	c, err := exportd.Dial(r.target)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { _ = c.Close() })
	return c
}

func (r *runner) options(progress *[]*exportdv1.Progress, out *bytes.Buffer) exportd.ExportOptions {
	o := exportd.ExportOptions{
		Format:       exportdv1.Format(exportdv1.Format_value[r.sc.Format]),
		Delivery:     exportdv1.Delivery(exportdv1.Delivery_value[r.sc.Delivery]),
		ExpectedRows: int64(len(r.st.Table.Rows)),
	}
	if f, ok := r.st.Formats[r.sc.Format]; ok {
		o.FileName = r.sc.Name + f.Suffix
	}
	for name := range r.sc.Options {
		switch name {
		case "csv":
			o.FormatOptions = &exportdv1.CsvOptions{}
		case "xlsx":
			o.FormatOptions = &exportdv1.XlsxOptions{}
		case "pdf":
			o.FormatOptions = &exportdv1.PdfOptions{}
		case "parquet":
			o.FormatOptions = &exportdv1.ParquetOptions{}
		case "arrow":
			o.FormatOptions = &exportdv1.ArrowOptions{}
		case "json_lines":
			o.FormatOptions = &exportdv1.JsonLinesOptions{}
		default:
			r.t.Fatalf("unknown options %q", name)
		}
	}
	if progress != nil {
		var mu sync.Mutex
		o.OnProgress = func(p *exportdv1.Progress) {
			mu.Lock()
			*progress = append(*progress, p)
			mu.Unlock()
		}
	}
	if out != nil {
		o.Output = out
	}
	return o
}

func (r *runner) run() {
	switch r.sc.Kind {
	case "export":
		r.export()
	case "watch":
		r.watch()
	case "cancel":
		r.cancel()
	case "resume":
		r.resume()
	case "read_error":
		r.readError()
	case "export_error":
		r.exportError()
	case "queue_full":
		r.queueFull()
	default:
		r.t.Fatalf("unknown scenario kind %q", r.sc.Kind)
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// checkResult checks what every successful export must satisfy and returns the file's bytes
// (streamed, or read back by handle).
func (r *runner) checkResult(c *exportd.Client, res *exportd.Result, streamed []byte) []byte {
	t := r.t
	t.Helper()
	f := r.st.Formats[r.sc.Format]
	if res.Rows != int64(len(r.st.Table.Rows)) {
		t.Errorf("completed.rows = %d, want %d", res.Rows, len(r.st.Table.Rows))
	}
	if res.MediaType != f.MediaType {
		t.Errorf("completed.media_type = %q, want %q", res.MediaType, f.MediaType)
	}
	if res.FileName != r.sc.Name+f.Suffix {
		t.Errorf("completed.file_name = %q, want %q", res.FileName, r.sc.Name+f.Suffix)
	}
	if len(res.SHA256) != 64 {
		t.Errorf("completed.sha256 = %q is not 64 hex digits", res.SHA256)
	}
	var file []byte
	streams := r.sc.Delivery != "DELIVERY_HANDLE"
	keeps := r.sc.Delivery == "DELIVERY_HANDLE" || r.sc.Delivery == "DELIVERY_STREAM_AND_HANDLE"
	if streams {
		if int64(len(streamed)) != res.SizeBytes || sha(streamed) != res.SHA256 {
			t.Fatalf("streamed %d bytes (sha256 %s), completed says %d (%s)", len(streamed), sha(streamed), res.SizeBytes, res.SHA256)
		}
		file = streamed
	} else if len(streamed) != 0 {
		t.Errorf("delivery %s streamed %d bytes", r.sc.Delivery, len(streamed))
	}
	if keeps != (res.Handle != "") {
		t.Fatalf("delivery %s gave handle %q", r.sc.Delivery, res.Handle)
	}
	if keeps {
		var buf bytes.Buffer
		n, err := c.Read(r.ctx, res.Handle, 0, 0, &buf)
		if err != nil {
			t.Fatalf("ReadArtifact: %v", err)
		}
		if n != res.SizeBytes || sha(buf.Bytes()) != res.SHA256 {
			t.Fatalf("read %d bytes (sha256 %s) by handle, completed says %d (%s)", n, sha(buf.Bytes()), res.SizeBytes, res.SHA256)
		}
		if file != nil && !bytes.Equal(file, buf.Bytes()) {
			t.Fatal("streamed and kept files differ")
		}
		file = buf.Bytes()
	}
	checkContent(t, r.st, f.Content, file)
	return file
}

// checkProgress: fractions within [0, 1] and never decreasing, rows_done and state never going
// back, and, when reachOne, at least one event and the last at fraction 1.
func (r *runner) checkProgress(events []*exportdv1.Progress, reachOne bool) {
	t := r.t
	t.Helper()
	if len(events) == 0 {
		if reachOne {
			t.Error("no progress events")
		}
		return
	}
	for i, p := range events {
		if p.GetFraction() < 0 || p.GetFraction() > 1 {
			t.Errorf("progress %d: fraction %v outside [0, 1]", i, p.GetFraction())
		}
		if i == 0 {
			continue
		}
		prev := events[i-1]
		if p.GetFraction() < prev.GetFraction() || p.GetRowsDone() < prev.GetRowsDone() || p.GetState() < prev.GetState() {
			t.Errorf("progress went back: %v then %v", prev, p)
		}
	}
	if last := events[len(events)-1]; reachOne && last.GetFraction() != 1 {
		t.Errorf("last progress has fraction %v, want 1", last.GetFraction())
	}
}

func (r *runner) export() {
	c := r.dial()
	var progress []*exportdv1.Progress
	var out bytes.Buffer
	// Through Arrow Go: the IPC reader is an array.RecordReader that ExportRecords re-encodes.
	rdr, err := ipc.NewReader(bytes.NewReader(r.data.all()))
	if err != nil {
		r.t.Fatal(err)
	}
	defer rdr.Release()
	res, err := c.ExportRecords(r.ctx, rdr, r.options(&progress, &out))
	if err != nil {
		r.t.Fatalf("export: %v", err)
	}
	r.checkResult(c, res, out.Bytes())
	r.checkProgress(progress, true)
}

// hold starts an export and sends only the schema and first batch, so the job stays open.
func (r *runner) hold(c *exportd.Client, progress *[]*exportdv1.Progress, out *bytes.Buffer) (*exportd.ExportStream, string) {
	e, err := c.StartExport(r.ctx, r.options(progress, out))
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := e.Write(r.data.held); err != nil {
		r.t.Fatalf("writing first batch: %v", err)
	}
	acc, err := e.Accepted(r.ctx)
	if err != nil {
		r.t.Fatalf("waiting for accepted: %v", err)
	}
	if acc.GetJobId() == "" {
		r.t.Fatal("accepted without a job id")
	}
	return e, acc.GetJobId()
}

func (r *runner) release(e *exportd.ExportStream) (*exportd.Result, error) {
	if _, err := e.Write(r.data.rest); err != nil {
		return e.Wait()
	}
	if err := e.Close(); err != nil {
		return e.Wait()
	}
	return e.Wait()
}

func (r *runner) watch() {
	a, b := r.dial(), r.dial()
	var progress []*exportdv1.Progress
	var out bytes.Buffer
	e, jobID := r.hold(a, &progress, &out)

	var watched []*exportdv1.Progress
	first := make(chan struct{})
	var once sync.Once
	type outcome struct {
		res *exportd.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := b.Watch(r.ctx, jobID, func(p *exportdv1.Progress) {
			watched = append(watched, p)
			once.Do(func() { close(first) })
		})
		done <- outcome{res, err}
	}()
	select { // let the watcher subscribe before the job can finish
	case <-first:
	case <-time.After(2 * time.Second):
	}
	res, err := r.release(e)
	if err != nil {
		r.t.Fatalf("export: %v", err)
	}
	r.checkResult(a, res, out.Bytes())
	r.checkProgress(progress, true)
	w := <-done
	if w.err != nil {
		r.t.Fatalf("watch: %v", w.err)
	}
	if w.res.JobID != jobID || w.res.SHA256 != res.SHA256 || w.res.SizeBytes != res.SizeBytes || w.res.Handle != res.Handle {
		r.t.Errorf("watch saw %+v, export got %+v", w.res, res)
	}
	r.checkProgress(watched, r.sc.WatchReachesOne)
	if !r.sc.WatchReachesOne && len(watched) > 0 {
		r.t.Logf("watch progress ended at fraction %v", watched[len(watched)-1].GetFraction())
	}
}

func (r *runner) expectError(err error) *exportd.Error {
	t := r.t
	t.Helper()
	var e *exportd.Error
	if !errors.As(err, &e) {
		t.Fatalf("got %v, want an exportd.Error with %s", err, r.sc.ExpectError.Code)
	}
	want := codeOf(t, r.sc.ExpectError.Code)
	if e.Code != want {
		t.Fatalf("got code %s (%v), want %s", e.Code, e, want)
	}
	if e.Reason == "" {
		t.Errorf("error %v carries no ErrorInfo reason", e)
	}
	if r.sc.ExpectError.Reason != "" && e.Reason != r.sc.ExpectError.Reason {
		t.Errorf("reason %q, want %q", e.Reason, r.sc.ExpectError.Reason)
	}
	if r.sc.ExpectError.RetryInfo && !e.HasRetryInfo {
		t.Errorf("error %v carries no RetryInfo", e)
	}
	return e
}

func codeOf(t testing.TB, name string) codes.Code {
	var c codes.Code
	if err := c.UnmarshalJSON([]byte(`"` + name + `"`)); err != nil {
		t.Fatalf("unknown code %s", name)
	}
	return c
}

func (r *runner) cancel() {
	a, b := r.dial(), r.dial()
	e, jobID := r.hold(a, nil, nil)
	switch r.sc.Via {
	case "cancel_job":
		if _, err := b.Cancel(r.ctx, jobID, "conformance"); err != nil {
			r.t.Fatalf("CancelJob: %v", err)
		}
	case "export_cancel":
		if err := e.Cancel("conformance"); err != nil {
			r.expectError(err)
		}
	default:
		r.t.Fatalf("unknown cancel via %q", r.sc.Via)
	}
	_, err := e.Wait()
	r.expectError(err)
	want := exportdv1.JobState(exportdv1.JobState_value[r.sc.ExpectJobState])
	var job *exportdv1.Job
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		job, err = b.GetJob(r.ctx, jobID)
		if err != nil {
			r.t.Fatalf("GetJob: %v", err)
		}
		if job.GetState() == want || time.Now().After(deadline) {
			break
		}
	}
	if job.GetState() != want {
		r.t.Errorf("job state %s, want %s", job.GetState(), want)
	}
}

func (r *runner) exportHandle(c *exportd.Client) *exportd.Result {
	res, err := c.Export(r.ctx, bytes.NewReader(r.data.all()), r.options(nil, nil))
	if err != nil {
		r.t.Fatalf("export: %v", err)
	}
	if res.Handle == "" {
		r.t.Fatal("no handle")
	}
	return res
}

func (r *runner) resume() {
	c := r.dial()
	res := r.exportHandle(c)
	prefix := int64(float64(res.SizeBytes) * r.sc.PrefixFraction)
	path := filepath.Join(r.t.TempDir(), res.FileName)
	f, err := os.Create(path)
	if err != nil {
		r.t.Fatal(err)
	}
	n, err := c.Read(r.ctx, res.Handle, 0, prefix, f)
	_ = f.Close()
	if err != nil || n != prefix {
		r.t.Fatalf("reading a %d-byte prefix: %d bytes, %v", prefix, n, err)
	}
	fr, err := c.Fetch(r.ctx, res.Handle, path)
	if err != nil {
		r.t.Fatalf("fetch: %v", err)
	}
	if fr.ResumedFrom != prefix || fr.Downloaded != res.SizeBytes-prefix {
		r.t.Errorf("fetch resumed from %d and downloaded %d, want %d and %d", fr.ResumedFrom, fr.Downloaded, prefix, res.SizeBytes-prefix)
	}
	file, err := os.ReadFile(path)
	if err != nil {
		r.t.Fatal(err)
	}
	if int64(len(file)) != res.SizeBytes || sha(file) != res.SHA256 {
		r.t.Fatalf("resumed file: %d bytes sha256 %s, want %d %s", len(file), sha(file), res.SizeBytes, res.SHA256)
	}
	checkContent(r.t, r.st, r.st.Formats[r.sc.Format].Content, file)
}

func (r *runner) readError() {
	c := r.dial()
	handle, offset := r.sc.Handle, int64(0)
	if handle == "" {
		res := r.exportHandle(c)
		handle, offset = res.Handle, res.SizeBytes+r.sc.OffsetPastEnd
	}
	_, err := c.Read(r.ctx, handle, offset, 0, &bytes.Buffer{})
	r.expectError(err)
}

func (r *runner) exportError() {
	c := r.dial()
	data := r.data.all()
	if r.sc.DataUTF8 != nil {
		data = []byte(*r.sc.DataUTF8)
	}
	_, err := c.Export(r.ctx, bytes.NewReader(data), r.options(nil, nil))
	r.expectError(err)
}

func (r *runner) queueFull() {
	a, b := r.dial(), r.dial()
	e, _ := r.hold(a, nil, nil)
	_, err := b.Export(r.ctx, bytes.NewReader(r.data.all()), r.options(nil, nil))
	r.expectError(err)
	if _, err := r.release(e); err != nil {
		r.t.Fatalf("held export: %v", err)
	}
	// The slot is free again: a new export runs (retrying while the server still reports the
	// queue full, as RetryInfo invites).
	for deadline := time.Now().Add(5 * time.Second); ; {
		var out bytes.Buffer
		res, err := b.Export(r.ctx, bytes.NewReader(r.data.all()), r.options(nil, &out))
		var xe *exportd.Error
		if errors.As(err, &xe) && xe.Code == codes.ResourceExhausted && time.Now().Before(deadline) {
			time.Sleep(max(xe.RetryDelay, 50*time.Millisecond))
			continue
		}
		if err != nil {
			r.t.Fatalf("export after the held one: %v", err)
		}
		r.checkResult(b, res, out.Bytes())
		return
	}
}
