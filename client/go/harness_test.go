package exportd_test

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// suite is tests/conformance/scenarios.json; its schema is in tests/conformance/README.md.
type suite struct {
	Servers map[string]struct {
		Flags     []string `json:"flags"`
		TargetEnv string   `json:"target_env"`
	} `json:"servers"`
	Table struct {
		Columns []struct {
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"columns"`
		Rows      [][]any `json:"rows"`
		BatchRows int     `json:"batch_rows"`
	} `json:"table"`
	Formats map[string]struct {
		MediaType string `json:"media_type"`
		Suffix    string `json:"suffix"`
		Content   string `json:"content"`
	} `json:"formats"`
	Scenarios []scenario `json:"scenarios"`
}

type scenario struct {
	Name            string                     `json:"name"`
	Kind            string                     `json:"kind"`
	Server          string                     `json:"server"`
	Format          string                     `json:"format"`
	Delivery        string                     `json:"delivery"`
	Via             string                     `json:"via"`
	Options         map[string]json.RawMessage `json:"options"`
	DataUTF8        *string                    `json:"data_utf8"`
	Handle          string                     `json:"handle"`
	OffsetPastEnd   int64                      `json:"offset_past_end"`
	PrefixFraction  float64                    `json:"prefix_fraction"`
	ExpectJobState  string                     `json:"expect_job_state"`
	WatchReachesOne bool                       `json:"watch_progress_reaches_one"`
	ExpectError     *struct {
		Code      string `json:"code"`
		Reason    string `json:"reason"`
		RetryInfo bool   `json:"retry_info"`
	} `json:"expect_error"`
}

func repoRoot(t testing.TB) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "tests", "conformance", "scenarios.json")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("tests/conformance/scenarios.json not found above the working directory")
		}
		dir = parent
	}
}

func loadSuite(t testing.TB) *suite {
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "tests", "conformance", "scenarios.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s suite
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&s); err != nil {
		t.Fatal(err)
	}
	return &s
}

// servers starts each named server at most once per test binary, unless its target_env names
// a running one.
type servers struct {
	mu      sync.Mutex
	targets map[string]string
	procs   []*exec.Cmd
	dirs    []string
}

var running = &servers{targets: map[string]string{}}

var listening = regexp.MustCompile(`listening on (\S+)`)

func (s *servers) target(t testing.TB, st *suite, name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if tgt, ok := s.targets[name]; ok {
		return tgt
	}
	conf, ok := st.Servers[name]
	if !ok {
		t.Fatalf("scenario names unknown server %q", name)
	}
	if tgt := os.Getenv(conf.TargetEnv); tgt != "" {
		s.targets[name] = tgt
		return tgt
	}
	bin := os.Getenv("EXPORTD_BIN")
	if bin == "" {
		bin = filepath.Join(repoRoot(t), ".venv", "bin", "exportd")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no server: %s unset and %s missing", conf.TargetEnv, bin)
	}
	dir, err := os.MkdirTemp("", "exportd-go-conformance-")
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", dir}, conf.Flags...)
	cmd := exec.Command(bin, args...)
	logFile, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logFile
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.procs = append(s.procs, cmd)
	s.dirs = append(s.dirs, dir)
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
				break
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case tgt := <-found:
		s.targets[name] = tgt
		return tgt
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not print its address within 30s", bin)
		return ""
	}
}

// stop ends the servers this binary started; when failed, their logs go to stderr first.
func (s *servers) stop(failed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.procs {
		_ = p.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = p.Process.Kill()
			<-done
		}
	}
	for _, d := range s.dirs {
		if log, err := os.ReadFile(filepath.Join(d, "server.log")); err == nil && failed {
			fmt.Fprintf(os.Stderr, "--- server log %s\n%s", d, log)
		}
		_ = os.RemoveAll(d)
	}
}

// tableData is the suite's table as an Arrow IPC stream: held is the schema and first batch,
// rest the other batches and the end-of-stream marker.
type tableData struct {
	schema *arrow.Schema
	held   []byte
	rest   []byte
}

func (d *tableData) all() []byte { return append(append([]byte{}, d.held...), d.rest...) }

func buildTable(t testing.TB, st *suite) *tableData {
	fields := make([]arrow.Field, len(st.Table.Columns))
	for i, c := range st.Table.Columns {
		var dt arrow.DataType
		switch c.Type {
		case "int64":
			dt = arrow.PrimitiveTypes.Int64
		case "float64":
			dt = arrow.PrimitiveTypes.Float64
		case "utf8":
			dt = arrow.BinaryTypes.String
		case "bool":
			dt = arrow.FixedWidthTypes.Boolean
		default:
			t.Fatalf("unknown column type %q", c.Type)
		}
		fields[i] = arrow.Field{Name: c.Name, Type: dt, Nullable: true}
	}
	schema := arrow.NewSchema(fields, nil)
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(schema))
	heldLen := -1
	rows := st.Table.Rows
	for start := 0; start < len(rows); start += st.Table.BatchRows {
		end := min(start+st.Table.BatchRows, len(rows))
		b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
		for _, row := range rows[start:end] {
			for i, v := range row {
				if v == nil {
					b.Field(i).AppendNull()
					continue
				}
				switch fb := b.Field(i).(type) {
				case *array.Int64Builder:
					n, err := v.(json.Number).Int64()
					if err != nil {
						t.Fatal(err)
					}
					fb.Append(n)
				case *array.Float64Builder:
					f, err := v.(json.Number).Float64()
					if err != nil {
						t.Fatal(err)
					}
					fb.Append(f)
				case *array.StringBuilder:
					fb.Append(v.(string))
				case *array.BooleanBuilder:
					fb.Append(v.(bool))
				}
			}
		}
		rec := b.NewRecordBatch()
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
		rec.Release()
		b.Release()
		if heldLen < 0 {
			heldLen = buf.Len()
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	all := buf.Bytes()
	return &tableData{schema: schema, held: all[:heldLen], rest: all[heldLen:]}
}

// expectedRows is the table with each cell as int64, float64, string, bool or nil.
func expectedRows(t testing.TB, st *suite) [][]any {
	out := make([][]any, len(st.Table.Rows))
	for r, row := range st.Table.Rows {
		out[r] = make([]any, len(row))
		for i, v := range row {
			if v == nil {
				continue
			}
			switch st.Table.Columns[i].Type {
			case "int64":
				n, err := v.(json.Number).Int64()
				if err != nil {
					t.Fatal(err)
				}
				out[r][i] = n
			case "float64":
				f, err := v.(json.Number).Float64()
				if err != nil {
					t.Fatal(err)
				}
				out[r][i] = f
			default:
				out[r][i] = v
			}
		}
	}
	return out
}

func sameCell(want, got any) bool {
	if w, ok := want.(float64); ok {
		g, ok := got.(float64)
		return ok && math.Abs(w-g) <= 1e-9*math.Max(1, math.Abs(w))
	}
	return want == got
}

func compareRows(t testing.TB, st *suite, got [][]any) {
	t.Helper()
	want := expectedRows(t, st)
	if len(got) != len(want) {
		t.Fatalf("file holds %d rows, want %d", len(got), len(want))
	}
	for r := range want {
		if len(got[r]) != len(want[r]) {
			t.Fatalf("row %d has %d cells, want %d", r, len(got[r]), len(want[r]))
		}
		for i := range want[r] {
			if !sameCell(want[r][i], got[r][i]) {
				t.Errorf("row %d column %s: got %#v, want %#v", r, st.Table.Columns[i].Name, got[r][i], want[r][i])
			}
		}
	}
}

// parseText reads one delimited-text cell back into the column's type; "" is null.
func parseText(t testing.TB, typ, s string) any {
	if s == "" && typ != "utf8" {
		return nil
	}
	switch typ {
	case "int64":
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("int cell %q: %v", s, err)
		}
		return n
	case "float64":
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("float cell %q: %v", s, err)
		}
		return f
	case "bool":
		return strings.EqualFold(s, "true")
	}
	return s
}

func checkDelimited(t testing.TB, st *suite, file []byte, comma rune) {
	r := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(file, []byte("\xef\xbb\xbf"))))
	r.Comma = comma
	records, err := r.ReadAll()
	if err != nil {
		t.Fatalf("reading delimited text: %v", err)
	}
	if len(records) == 0 {
		t.Fatal("empty file")
	}
	for i, c := range st.Table.Columns {
		if records[0][i] != c.Name {
			t.Errorf("header %d is %q, want %q", i, records[0][i], c.Name)
		}
	}
	got := make([][]any, 0, len(records)-1)
	for _, rec := range records[1:] {
		row := make([]any, len(rec))
		for i, s := range rec {
			row[i] = parseText(t, st.Table.Columns[i].Type, s)
		}
		got = append(got, row)
	}
	compareRows(t, st, got)
}

func checkJSONL(t testing.TB, st *suite, file []byte) {
	var got [][]any
	for _, line := range bytes.Split(bytes.TrimRight(file, "\n"), []byte("\n")) {
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.UseNumber()
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			t.Fatalf("JSON line %q: %v", line, err)
		}
		row := make([]any, len(st.Table.Columns))
		for i, c := range st.Table.Columns {
			v := obj[c.Name]
			if n, ok := v.(json.Number); ok {
				if c.Type == "int64" {
					v, _ = n.Int64()
				} else {
					v, _ = n.Float64()
				}
			}
			row[i] = v
		}
		got = append(got, row)
	}
	compareRows(t, st, got)
}

func rowsOfRecords(t testing.TB, st *suite, schema *arrow.Schema, next func() (arrow.RecordBatch, bool)) [][]any {
	for i, c := range st.Table.Columns {
		if schema.Field(i).Name != c.Name {
			t.Errorf("field %d is %q, want %q", i, schema.Field(i).Name, c.Name)
		}
	}
	var got [][]any
	for {
		rec, ok := next()
		if !ok {
			return got
		}
		for r := 0; r < int(rec.NumRows()); r++ {
			row := make([]any, rec.NumCols())
			for i, col := range rec.Columns() {
				if col.IsNull(r) {
					continue
				}
				switch a := col.(type) {
				case *array.Int64:
					row[i] = a.Value(r)
				case *array.Float64:
					row[i] = a.Value(r)
				case *array.String:
					row[i] = a.Value(r)
				case *array.LargeString:
					row[i] = a.Value(r)
				case *array.Boolean:
					row[i] = a.Value(r)
				default:
					t.Fatalf("column %d has type %s", i, col.DataType())
				}
			}
			got = append(got, row)
		}
	}
}

func checkArrowFile(t testing.TB, st *suite, file []byte) {
	fr, err := ipc.NewFileReader(bytes.NewReader(file))
	if err != nil {
		t.Fatalf("reading Arrow IPC file: %v", err)
	}
	defer fr.Close()
	i := 0
	got := rowsOfRecords(t, st, fr.Schema(), func() (arrow.RecordBatch, bool) {
		if i >= fr.NumRecords() {
			return nil, false
		}
		rec, err := fr.RecordBatch(i)
		if err != nil {
			t.Fatal(err)
		}
		i++
		return rec, true
	})
	compareRows(t, st, got)
}

func checkParquet(t testing.TB, st *suite, file []byte) {
	tbl, err := pqarrow.ReadTable(context.Background(), bytes.NewReader(file), parquet.NewReaderProperties(memory.DefaultAllocator), pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		t.Fatalf("reading Parquet: %v", err)
	}
	defer tbl.Release()
	tr := array.NewTableReader(tbl, 1024)
	defer tr.Release()
	got := rowsOfRecords(t, st, tbl.Schema(), func() (arrow.RecordBatch, bool) {
		if !tr.Next() {
			return nil, false
		}
		return tr.RecordBatch(), true
	})
	compareRows(t, st, got)
}

// checkXLSX opens the workbook's zip container and checks that the header and every text cell
// of the table appear as cell text (shared or inline strings).
func checkXLSX(t testing.TB, st *suite, file []byte) {
	zr, err := zip.NewReader(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatalf("XLSX is not a zip container: %v", err)
	}
	texts := map[string]bool{}
	names := map[string]bool{}
	for _, f := range zr.File {
		names[f.Name] = true
		if f.Name != "xl/sharedStrings.xml" && !strings.HasPrefix(f.Name, "xl/worksheets/") {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		dec := xml.NewDecoder(rc)
		for {
			tok, err := dec.Token()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f.Name, err)
			}
			if cd, ok := tok.(xml.CharData); ok {
				texts[string(cd)] = true
			}
		}
		rc.Close()
	}
	for _, part := range []string{"[Content_Types].xml", "xl/workbook.xml"} {
		if !names[part] {
			t.Errorf("XLSX lacks %s", part)
		}
	}
	for i, c := range st.Table.Columns {
		if !texts[c.Name] {
			t.Errorf("XLSX lacks header text %q", c.Name)
		}
		if c.Type != "utf8" {
			continue
		}
		for _, row := range st.Table.Rows {
			if s, ok := row[i].(string); ok && !texts[s] {
				t.Errorf("XLSX lacks cell text %q", s)
			}
		}
	}
}

func checkPDF(t testing.TB, file []byte) {
	if !bytes.HasPrefix(file, []byte("%PDF-")) {
		t.Errorf("PDF does not start with %%PDF-: %q", file[:min(len(file), 8)])
	}
	if !bytes.Contains(file[max(0, len(file)-1024):], []byte("%%EOF")) {
		t.Errorf("PDF lacks the %s trailer", "%EOF")
	}
}

func checkContent(t testing.TB, st *suite, content string, file []byte) {
	t.Helper()
	switch content {
	case "csv":
		checkDelimited(t, st, file, ',')
	case "tsv":
		checkDelimited(t, st, file, '\t')
	case "jsonl":
		checkJSONL(t, st, file)
	case "arrow":
		checkArrowFile(t, st, file)
	case "parquet":
		checkParquet(t, st, file)
	case "xlsx":
		checkXLSX(t, st, file)
	case "pdf":
		checkPDF(t, file)
	default:
		t.Fatalf("unknown content check %q", content)
	}
}
