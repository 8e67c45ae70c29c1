package exportd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"google.golang.org/grpc/codes"

	exportdv1 "github.com/exportd/exportd/client/go/gen/exportd/v1"
)

// Stat returns a kept file's metadata. An unknown or expired handle is *Error with
// codes.NotFound.
func (c *Client) Stat(ctx context.Context, handle string) (*Artifact, error) {
	resp, err := c.artifacts.GetArtifact(ctx, &exportdv1.GetArtifactRequest{Handle: handle})
	if err != nil {
		return nil, fromRPC(err)
	}
	return resp.GetArtifact(), nil
}

// Delete removes a kept file at once.
func (c *Client) Delete(ctx context.Context, handle string) error {
	_, err := c.artifacts.DeleteArtifact(ctx, &exportdv1.DeleteArtifactRequest{Handle: handle})
	return fromRPC(err)
}

// Read copies the bytes of a kept file from offset (at most limit bytes; 0 reads to the end)
// into w and returns how many it wrote. An offset past the end is *Error with
// codes.OutOfRange.
func (c *Client) Read(ctx context.Context, handle string, offset, limit int64, w io.Writer) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.artifacts.ReadArtifact(ctx, &exportdv1.ReadArtifactRequest{Handle: handle, Offset: offset, Limit: limit})
	if err != nil {
		return 0, fromRPC(err)
	}
	var n int64
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, fromRPC(err)
		}
		if chunk.GetOffset() != offset+n {
			return n, &Error{Code: codes.DataLoss, Message: fmt.Sprintf("chunk at offset %d, expected %d", chunk.GetOffset(), offset+n)}
		}
		m, err := w.Write(chunk.GetData())
		n += int64(m)
		if err != nil {
			return n, fmt.Errorf("exportd: writing: %w", err)
		}
	}
}

// FetchResult says what Fetch did.
type FetchResult struct {
	// Artifact is the file's metadata on the server.
	Artifact *Artifact
	// ResumedFrom is the size of the partial file Fetch found and kept (0 for a fresh download).
	ResumedFrom int64
	// Downloaded is how many bytes this call received.
	Downloaded int64
}

// Fetch downloads a kept file to path. When path already holds a prefix of the file (an earlier
// download that stopped), only the rest is downloaded. The whole file is then checked against
// the server's SHA-256: on a mismatch path is removed and the error wraps ErrChecksumMismatch.
// After a network error path keeps what arrived, so calling Fetch again resumes.
func (c *Client) Fetch(ctx context.Context, handle, path string) (*FetchResult, error) {
	art, err := c.Stat(ctx, handle)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("exportd: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("exportd: %w", err)
	}
	have := st.Size()
	if have > art.GetSizeBytes() {
		if err := f.Truncate(0); err != nil {
			return nil, fmt.Errorf("exportd: %w", err)
		}
		have = 0
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, have)); err != nil {
		return nil, fmt.Errorf("exportd: hashing %s: %w", path, err)
	}
	if _, err := f.Seek(have, io.SeekStart); err != nil {
		return nil, fmt.Errorf("exportd: %w", err)
	}
	res := &FetchResult{Artifact: art, ResumedFrom: have}
	if have < art.GetSizeBytes() {
		n, err := c.Read(ctx, handle, have, 0, io.MultiWriter(f, h))
		res.Downloaded = n
		if err != nil {
			return res, err
		}
	}
	if err := f.Sync(); err != nil {
		return res, fmt.Errorf("exportd: %w", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != art.GetSha256() {
		_ = f.Close()
		_ = os.Remove(path)
		return res, fmt.Errorf("%w: %s has sha256 %s, server reported %s", ErrChecksumMismatch, path, got, art.GetSha256())
	}
	return res, nil
}
