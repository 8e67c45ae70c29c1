package exportd_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/apache/arrow-go/v18/arrow/ipc"

	exportd "github.com/exportd/exportd/client/go"
)

// Export an Arrow IPC stream file to CSV, streamed back into a local file, then fetch a kept
// copy of the same table as XLSX by handle.
func Example() {
	ctx := context.Background()
	c, err := exportd.Dial("127.0.0.1:50051")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	in, _ := os.Open("table.arrows")
	rdr, _ := ipc.NewReader(in)
	out, _ := os.Create("table.csv")
	res, err := c.ExportRecords(ctx, rdr, exportd.ExportOptions{
		Format:     exportd.FormatCSV,
		Output:     out,
		OnProgress: func(p *exportd.Progress) { fmt.Printf("%3.0f%%\n", 100*p.GetFraction()) },
	})
	if err != nil {
		log.Fatal(err) // *exportd.Error: Code, Reason, RetryDelay
	}
	fmt.Println(res.SizeBytes, res.SHA256)

	in.Seek(0, 0)
	kept, err := c.Export(ctx, in, exportd.ExportOptions{Format: exportd.FormatXLSX, Delivery: exportd.DeliveryHandle})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.Fetch(ctx, kept.Handle, "table.xlsx"); err != nil { // resumes, checks sha256
		log.Fatal(err)
	}
}
