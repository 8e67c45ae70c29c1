package exportd

import (
	"context"
	"io"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
)

// ExportRecords exports the record batches of rdr, encoded as an Arrow IPC stream while they
// are sent, so the table never needs to be in memory at once. It does not release rdr.
func (c *Client) ExportRecords(ctx context.Context, rdr array.RecordReader, opts ExportOptions) (*Result, error) {
	pr, pw := io.Pipe()
	go func() {
		w := ipc.NewWriter(pw, ipc.WithSchema(rdr.Schema()))
		for rdr.Next() {
			if err := w.Write(rdr.RecordBatch()); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		if err := rdr.Err(); err != nil {
			pw.CloseWithError(err)
			return
		}
		pw.CloseWithError(w.Close())
	}()
	res, err := c.Export(ctx, pr, opts)
	// Unblocks the encoder when the export ended before reading everything.
	_ = pr.CloseWithError(io.ErrClosedPipe)
	return res, err
}
