package server

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// TestStoreURLSeal: a vault's own store URL as a shared catalog keeps it
// (docs/format.md §1.1e) opens under the deployment key for its own
// vault name only; the row holds no URL in plaintext; a row moved from
// another name, sealed under another deployment key, flipped or cut
// short is "wrong key"; and the layout is the spec's, recomputed here
// from its HKDF and AES-GCM steps.
func TestStoreURLSeal(t *testing.T) {
	dk := seal.NewRandomKey()
	u := newStoreURLSeal(dk)
	const url = "s3://backups/prod?endpoint=https://s3.example.com:9000&region=eu-west-2"
	row := u.seal("prod", url)
	if got, err := newStoreURLSeal(dk).open("prod", row); err != nil || got != url {
		t.Fatalf("open by another server of the deployment = %q, %v", got, err)
	}
	if bytes.Contains(row, []byte("backups")) || bytes.Contains(row, []byte("s3.example.com")) {
		t.Error("the row holds the URL in plaintext")
	}
	for name, b := range map[string][]byte{
		"another vault's name":      nil,
		"a case variant":            nil,
		"another deployment key":    newStoreURLSeal(seal.NewRandomKey()).seal("prod", url),
		"the URL in plain":          []byte(url),
		"cut short":                 row[:40],
		"empty":                     {},
		"first byte flipped":        flip(row, 0),
		"a salt byte flipped":       flip(row, 5),
		"a ciphertext byte flipped": flip(row, len(row)-1),
	} {
		open := "prod"
		switch name {
		case "another vault's name":
			b, open = row, "prod2"
		case "a case variant":
			b, open = u.seal("Prod", url), "prod"
		}
		if got, err := u.open(open, b); !errors.Is(err, vault.ErrWrongKey) {
			t.Errorf("%s: %q, %v; want ErrWrongKey", name, got, err)
		}
	}

	// The spec's steps.
	v, err := hkdf.Key(sha256.New, dk[:], nil, "coffer/v1/store-url-seal", 32)
	if err != nil {
		t.Fatal(err)
	}
	if row[0] != 0x01 || len(row) != 1+32+len(url)+16 {
		t.Fatalf("row: version %#x, %d bytes; want 0x01, %d", row[0], len(row), 1+32+len(url)+16)
	}
	k, err := hkdf.Key(sha256.New, v, row[1:33], "coffer/v1/store-url-seal", 32)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := aes.NewCipher(k)
	gcm, _ := cipher.NewGCM(blk)
	aad := append([]byte("coffer/v1/store-url-seal\x00"), "prod"...)
	if pt, err := gcm.Open(nil, make([]byte, 12), row[33:], aad); err != nil || string(pt) != url {
		t.Errorf("the row opened by the spec's steps: %q, %v", pt, err)
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 1
	return c
}
