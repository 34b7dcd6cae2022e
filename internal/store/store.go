// Package store holds what the vault.Store implementations share: handle
// validation, so that every backend accepts and rejects the same names, and
// an exact-size, cancellable copy for Put.
//
// The implementations live in the subpackages local and mem; storetest is
// the conformance suite they all run.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/coffer-backup/coffer/internal/vault"
)

// ErrInvalidHandle is wrapped by every error CheckHandle returns.
var ErrInvalidHandle = errors.New("invalid handle")

// MaxNameLen bounds object names so that they fit in one path element on
// every filesystem and in an S3 key.
const MaxNameLen = 200

// CheckHandle reports whether h can name an object. Names are non-empty,
// at most MaxNameLen bytes of [0-9a-z._-], never start with a dot (which
// rules out ".", ".." and temp-file names) and never contain "..". Pack
// names have at least two characters (a local store fans packs out by
// their first two). The config object is always named "config".
func CheckHandle(h vault.Handle) error {
	switch h.Type {
	case vault.PackObject, vault.SnapshotObject, vault.KeyObject:
	case vault.ConfigObject:
		if h.Name != "config" {
			return fmt.Errorf("%w: config object must be named %q", ErrInvalidHandle, "config")
		}
		return nil
	default:
		return fmt.Errorf("%w: unknown object type %q", ErrInvalidHandle, h.Type)
	}
	name := h.Name
	switch {
	case name == "":
		return fmt.Errorf("%w: empty name", ErrInvalidHandle)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: name longer than %d bytes", ErrInvalidHandle, MaxNameLen)
	case name[0] == '.':
		return fmt.Errorf("%w: name starts with a dot", ErrInvalidHandle)
	case strings.Contains(name, ".."):
		return fmt.Errorf("%w: name contains %q", ErrInvalidHandle, "..")
	case h.Type == vault.PackObject && len(name) < 2:
		return fmt.Errorf("%w: pack name shorter than 2 bytes", ErrInvalidHandle)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if ('0' <= c && c <= '9') || ('a' <= c && c <= 'z') || c == '-' || c == '_' || c == '.' {
			continue
		}
		return fmt.Errorf("%w: name contains %q", ErrInvalidHandle, c)
	}
	return nil
}

// CopyExact copies exactly size bytes from src to dst. It fails if src
// ends early (wrapping io.ErrUnexpectedEOF), holds more than size bytes, or
// fails itself (wrapping its error), and it checks ctx before every read
// and once more at the end, so a cancelled ctx fails the copy (wrapping
// ctx.Err()) even when src has already delivered everything.
func CopyExact(ctx context.Context, dst io.Writer, src io.Reader, size int64) (int64, error) {
	if size < 0 {
		return 0, fmt.Errorf("negative size %d", size)
	}
	limit := size
	if limit < math.MaxInt64 {
		limit++ // read one byte more to detect a source longer than size
	}
	n, err := io.Copy(dst, io.LimitReader(ctxReader{ctx, src}, limit))
	switch {
	case err != nil:
		return n, err
	case n < size:
		return n, fmt.Errorf("reader gave %d of %d bytes: %w", n, size, io.ErrUnexpectedEOF)
	case n > size:
		return n, fmt.Errorf("reader holds more than %d bytes", size)
	}
	return n, ctx.Err()
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// List is a backend's List around its walk over the objects of type t:
// walk gets an fn whose errors are marked, so that an error from fn comes
// back unchanged whatever walk does with it on the way out, and any other
// error comes back as "list <t>: …".
func List(ctx context.Context, t vault.ObjectType, fn func(vault.ObjectInfo) error,
	walk func(context.Context, vault.ObjectType, func(vault.ObjectInfo) error) error) error {
	err := walk(ctx, t, func(oi vault.ObjectInfo) error {
		if err := fn(oi); err != nil {
			return callbackError{err}
		}
		return nil
	})
	var ce callbackError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ce):
		return ce.err
	}
	return fmt.Errorf("list %s: %w", t, err)
}

// callbackError carries an error from List's fn out of the walk unchanged.
// It has no Unwrap, so the walk's own checks (errors.Is(err,
// fs.ErrNotExist) and the like) never mistake fn's error for one of the
// store's.
type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }
