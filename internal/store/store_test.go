package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/coffer-backup/coffer/internal/vault"
)

func TestCheckHandle(t *testing.T) {
	valid := []vault.Handle{
		{Type: vault.PackObject, Name: strings.Repeat("ab", 32)},
		{Type: vault.PackObject, Name: "ab"},
		{Type: vault.SnapshotObject, Name: "0123456789abcdef"},
		{Type: vault.KeyObject, Name: "1"},
		{Type: vault.KeyObject, Name: "a-b_c.d"},
		{Type: vault.ConfigObject, Name: "config"},
		{Type: vault.SnapshotObject, Name: strings.Repeat("a", MaxNameLen)},
	}
	for _, h := range valid {
		if err := CheckHandle(h); err != nil {
			t.Errorf("CheckHandle(%q) = %v, want nil", h, err)
		}
	}
	invalid := []vault.Handle{
		{Type: vault.PackObject, Name: ""},
		{Type: vault.PackObject, Name: "a"},
		{Type: vault.PackObject, Name: "../etc"},
		{Type: vault.PackObject, Name: "ab/cd"},
		{Type: vault.SnapshotObject, Name: ".."},
		{Type: vault.SnapshotObject, Name: "."},
		{Type: vault.SnapshotObject, Name: ".tmp-123"},
		{Type: vault.SnapshotObject, Name: "a..b"},
		{Type: vault.SnapshotObject, Name: "ABCD"},
		{Type: vault.SnapshotObject, Name: "a b"},
		{Type: vault.SnapshotObject, Name: "a\x00b"},
		{Type: vault.SnapshotObject, Name: `a\b`},
		{Type: vault.SnapshotObject, Name: "é"},
		{Type: vault.SnapshotObject, Name: strings.Repeat("a", MaxNameLen+1)},
		{Type: vault.ConfigObject, Name: "other"},
		{Type: vault.ConfigObject, Name: ""},
		{Type: "locks", Name: "abcd"},
		{Type: "", Name: "abcd"},
		{Type: "packs/..", Name: "abcd"},
	}
	for _, h := range invalid {
		if err := CheckHandle(h); !errors.Is(err, ErrInvalidHandle) {
			t.Errorf("CheckHandle(%q) = %v, want ErrInvalidHandle", h, err)
		}
	}
}

func TestCopyExact(t *testing.T) {
	ctx := context.Background()
	data := bytes.Repeat([]byte("0123456789"), 10000)
	errBoom := errors.New("boom")
	cancelled, cancel := context.WithCancel(ctx)
	cancel()

	tests := []struct {
		name    string
		ctx     context.Context
		src     io.Reader
		size    int64
		wantErr error // nil: success; errAny: any error
	}{
		{"exact", ctx, bytes.NewReader(data), int64(len(data)), nil},
		{"exact half reads", ctx, iotest.HalfReader(bytes.NewReader(data)), int64(len(data)), nil},
		{"empty", ctx, bytes.NewReader(nil), 0, nil},
		{"short", ctx, bytes.NewReader(data[:10]), int64(len(data)), io.ErrUnexpectedEOF},
		{"long", ctx, bytes.NewReader(data), 10, errAny},
		{"long empty", ctx, bytes.NewReader(data), 0, errAny},
		{"failing", ctx, io.MultiReader(bytes.NewReader(data[:100]), iotest.ErrReader(errBoom)), int64(len(data)), errBoom},
		{"negative", ctx, bytes.NewReader(nil), -1, errAny},
		{"cancelled", cancelled, bytes.NewReader(data), int64(len(data)), context.Canceled},
		{"cancelled empty", cancelled, bytes.NewReader(nil), 0, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			n, err := CopyExact(tt.ctx, &buf, tt.src, tt.size)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("CopyExact: %v", err)
			case tt.wantErr == nil:
				if n != tt.size || !bytes.Equal(buf.Bytes(), data[:n]) {
					t.Fatalf("CopyExact copied %d bytes, want %d", n, tt.size)
				}
			case err == nil:
				t.Fatalf("CopyExact succeeded, want error %v", tt.wantErr)
			case tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Fatalf("CopyExact: %v, want %v", err, tt.wantErr)
			}
		})
	}
}

var errAny = errors.New("any error")

// TestList: an error from fn comes back as it is, even when the walk wraps
// it or would skip an error that looks like its own (a missing file), and
// the walk's own errors come back wrapped with the object type.
func TestList(t *testing.T) {
	ctx := context.Background()
	errFn := fmt.Errorf("fn: %w", fs.ErrNotExist)
	oi := vault.ObjectInfo{Handle: vault.Handle{Type: vault.SnapshotObject, Name: "a"}}
	walk := func(_ context.Context, _ vault.ObjectType, fn func(vault.ObjectInfo) error) error {
		err := fn(oi)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // a walk's "deleted since it was listed": must not swallow fn's error
		}
		if err != nil {
			return fmt.Errorf("walk: %w", err)
		}
		return nil
	}
	if err := List(ctx, vault.SnapshotObject, func(vault.ObjectInfo) error { return errFn }, walk); err != errFn {
		t.Errorf("List with a failing fn = %v, want fn's error itself", err)
	}
	var got []vault.ObjectInfo
	if err := List(ctx, vault.SnapshotObject, func(o vault.ObjectInfo) error { got = append(got, o); return nil }, walk); err != nil || len(got) != 1 || got[0] != oi {
		t.Errorf("List = %v, reported %v; want nil, [%v]", err, got, oi)
	}
	errWalk := errors.New("disk on fire")
	err := List(ctx, vault.SnapshotObject, func(vault.ObjectInfo) error { return nil },
		func(context.Context, vault.ObjectType, func(vault.ObjectInfo) error) error { return errWalk })
	if !errors.Is(err, errWalk) || !strings.HasPrefix(err.Error(), "list "+string(vault.SnapshotObject)+": ") {
		t.Errorf("List with a failing walk = %v, want it wrapped as list %s: …", err, vault.SnapshotObject)
	}
}
