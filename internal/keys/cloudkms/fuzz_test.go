//go:build !nocloudkms

package cloudkms

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/coffer-backup/coffer/internal/vault"
)

// FuzzUnwrap feeds arbitrary records and AADs to Unwrap under the vector
// key: it must never panic, must fail with vault.ErrCorrupt or
// vault.ErrWrongKey (the key is always there), and may succeed only with
// the secret that was wrapped, for the AAD it was wrapped with. Whatever
// parses must encode back to the same bytes. Seeds: the frozen vectors;
// corpus: testdata/fuzz/FuzzUnwrap.
func FuzzUnwrap(f *testing.F) {
	vs := readVectors(f)
	var secret []byte
	for _, v := range vs {
		w, aad := v.wrapped(f)
		f.Add(w.Data, aad)
		if v.Expect == "ok" {
			secret, _ = hex.DecodeString(v.Secret)
		}
	}
	p := vectorProvider(f)
	f.Fuzz(func(t *testing.T, data, aad []byte) {
		if r, err := parseRecord(data); err == nil {
			if !bytes.Equal(r.marshal(), data) {
				t.Fatalf("parse → marshal changed the record")
			}
		}
		got, err := p.Unwrap(t.Context(), vault.WrappedKey{KEK: vectorRef, Alg: Alg, Data: data}, aad)
		switch {
		case err == nil:
			if !bytes.Equal(got, secret) {
				t.Fatalf("Unwrap returned %d bytes that are not the wrapped secret", len(got))
			}
		case got != nil:
			t.Fatalf("a failed Unwrap returned data: %v", err)
		case !errors.Is(err, vault.ErrCorrupt) && !errors.Is(err, vault.ErrWrongKey):
			t.Fatalf("Unwrap: %v, want ErrCorrupt or ErrWrongKey", err)
		}
	})
}
