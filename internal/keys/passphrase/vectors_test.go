package passphrase_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/keys/passphrase"
	"github.com/coffer-backup/coffer/internal/vault"
)

var update = flag.Bool("update", false, "regenerate testdata/vectors")

const vectorDir = "testdata/vectors"

// wrapVector is one file of testdata/vectors: a record wrapped with the
// production parameters (docs/format.md §1.1d) and what Open and Unwrap
// must make of it with the passphrase given.
type wrapVector struct {
	Comment    string `json:"comment"`
	Passphrase string `json:"passphrase"`
	KeyID      string `json:"key_id"`
	Version    string `json:"version"`
	Alg        string `json:"alg"`
	AAD        string `json:"aad"`
	Wrapped    string `json:"wrapped"`
	Expect     string `json:"expect"` // "ok", "wrong_key", "key_unavailable" or "corrupt"
	Secret     string `json:"secret,omitempty"`
}

// TestVectors reads the frozen records: a change of the format, the
// parameters' floor or the derivations fails here.
func TestVectors(t *testing.T) {
	if *update {
		generateVectors(t)
	}
	files, _ := filepath.Glob(filepath.Join(vectorDir, "*.json"))
	if len(files) < 8 {
		t.Fatalf("only %d vector files under %s (run go test -run TestVectors -update)", len(files), vectorDir)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".json"), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var v wrapVector
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&v); err != nil {
				t.Fatal(err)
			}
			data, _ := hex.DecodeString(v.Wrapped)
			aad, _ := hex.DecodeString(v.AAD)
			w := vault.WrappedKey{KEK: vault.KeyRef{Provider: passphrase.Name, KeyID: v.KeyID, Version: v.Version}, Alg: v.Alg, Data: data}
			got, err := openVector(w, v.Passphrase, aad)
			switch v.Expect {
			case "ok":
				if err != nil || hex.EncodeToString(got) != v.Secret {
					t.Fatalf("got %x, %v; want %s", got, err, v.Secret)
				}
			case "wrong_key", "key_unavailable", "corrupt":
				want := map[string]error{"wrong_key": vault.ErrWrongKey, "key_unavailable": vault.ErrKeyUnavailable, "corrupt": vault.ErrCorrupt}[v.Expect]
				if !errors.Is(err, want) || got != nil {
					t.Fatalf("got %x, %v; want %v", got, err, want)
				}
			default:
				t.Fatalf("unknown expectation %q", v.Expect)
			}
		})
	}
}

// openVector is what opening a vault does: the slot set from the record,
// unlocked with the passphrase under the production bounds, then Unwrap.
func openVector(w vault.WrappedKey, pw string, aad []byte) ([]byte, error) {
	set, err := passphrase.SlotsOf(w)
	if err != nil {
		return nil, err
	}
	p, err := passphrase.Open(set, passphrase.NewPassphrase([]byte(pw)), passphrase.Options{Source: "the vector"})
	if err != nil {
		return nil, err
	}
	return p.Unwrap(ctx, w, aad)
}

func generateVectors(t *testing.T) {
	const one, two = "first vector passphrase", "second vector passphrase"
	p, err := passphrase.Create(passphrase.NewPassphrase([]byte(one)), passphrase.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p, err = p.WithSlot(passphrase.NewPassphrase([]byte(two))); err != nil {
		t.Fatal(err)
	}
	secret := bytes.Repeat([]byte{0xc0, 0xff, 0xee, 0x01}, 8)
	var vid [32]byte
	copy(vid[:], "coffer test vector vault id.....")
	aad := append(append(vid[:], "root"...), 0, 0, 0, 0) // docs/format.md §1.1
	w, err := p.Wrap(ctx, secret, aad)
	if err != nil {
		t.Fatal(err)
	}
	ref := p.Current()
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(w.Data)) }
	const s2 = 2 + 129 // slot 2's offset
	vs := map[string]wrapVector{
		"ok-first":   {Comment: "two slots; the first passphrase opens slot 1", Passphrase: one, Expect: "ok"},
		"ok-second":  {Comment: "two slots; the second passphrase opens slot 2", Passphrase: two, Expect: "ok"},
		"wrong-pass": {Comment: "a passphrase of neither slot", Passphrase: "not the passphrase", Expect: "wrong_key"},
		"other-aad":  {Comment: "unwrapped with the AAD of DEK v1", Passphrase: two, Expect: "wrong_key", AAD: hex.EncodeToString(append(append(vid[:], "dek"...), 1, 0, 0, 0))},
		"flipped-tag": {Comment: "last byte (slot 2's entry tag) flipped", Passphrase: two, Expect: "wrong_key",
			Wrapped: hex.EncodeToString(mut(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }))},
		"swapped-salt": {Comment: "slot 2's salt replaced by slot 1's", Passphrase: two, Expect: "wrong_key",
			Wrapped: hex.EncodeToString(mut(func(b []byte) []byte { copy(b[s2+17:s2+49], b[2+17:2+49]); return b }))},
		"cheap-params": {Comment: "slot 2's memory lowered to 19 MiB, below the floor", Passphrase: two, Expect: "corrupt",
			Wrapped: hex.EncodeToString(mut(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[s2+12:], 19456); return b }))},
		"huge-params": {Comment: "slot 1's memory raised to 2 GiB, above the ceiling", Passphrase: one, Expect: "corrupt",
			Wrapped: hex.EncodeToString(mut(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[2+12:], 2<<20); return b }))},
		"truncated": {Comment: "last byte missing", Passphrase: one, Expect: "corrupt",
			Wrapped: hex.EncodeToString(w.Data[:len(w.Data)-1])},
		"other-version": {Comment: "the KEK's version names another slot set", Passphrase: one, Expect: "key_unavailable", Version: "0000000000000000"},
	}
	if err := os.MkdirAll(vectorDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, v := range vs {
		v.KeyID, v.Alg = ref.KeyID, passphrase.Alg
		if v.Version == "" {
			v.Version = ref.Version
		}
		if v.AAD == "" {
			v.AAD = hex.EncodeToString(aad)
		}
		if v.Wrapped == "" {
			v.Wrapped = hex.EncodeToString(w.Data)
		}
		if v.Expect == "ok" {
			v.Secret = hex.EncodeToString(secret)
		}
		b, _ := json.MarshalIndent(v, "", "  ")
		if err := os.WriteFile(filepath.Join(vectorDir, name+".json"), append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
