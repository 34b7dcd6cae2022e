package format

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// TestSettingsVectors checks SettingsDigest and a settings entry's chain
// MAC against the frozen vectors of docs/format.md §8.4, and that every
// field moves the digest.
func TestSettingsVectors(t *testing.T) {
	raw, err := os.ReadFile("testdata/settings/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Vault, Root string
		Digests     []struct {
			Name           string
			SoftDelete     string `json:"soft_delete"`
			SoftDeleteDays int    `json:"soft_delete_days"`
			Immutability   string
			MinRetentionNS int64 `json:"min_retention_ns"`
			SingleUser     bool  `json:"single_user"`
			Policy         string
			DedupScope     string `json:"dedup_scope"`
			Digest         string
		}
		Entry struct {
			Seq        uint64
			Kind       uint8
			TimeUnixNS int64 `json:"time_unix_ns"`
			Principal  string
			Prev       string
			Digest     string
			MAC        string
		}
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	unhex := func(s string) []byte {
		t.Helper()
		b, err := hex.DecodeString(s)
		if err != nil || len(b) != 32 {
			t.Fatalf("bad hex %q", s)
		}
		return b
	}
	var id vault.ID
	copy(id[:], unhex(f.Vault))
	var all []vault.VaultSettings
	for _, d := range f.Digests {
		s := vault.VaultSettings{SoftDelete: vault.SoftDelete(d.SoftDelete), SoftDeleteDays: d.SoftDeleteDays, Immutability: vault.Immutability(d.Immutability),
			MinRetention: time.Duration(d.MinRetentionNS), SingleUser: d.SingleUser, Policy: d.Policy, DedupScope: vault.DedupScope(d.DedupScope),
			Updated: time.Unix(12345, 0)} // not bound: the entry's time records it
		got := SettingsDigest(id, s)
		if hex.EncodeToString(got[:]) != d.Digest {
			t.Errorf("%s: digest %x, want %s", d.Name, got, d.Digest)
		}
		all = append(all, s)
	}
	var root seal.Key
	copy(root[:], unhex(f.Root))
	var prev [32]byte
	copy(prev[:], unhex(f.Entry.Prev))
	e := vault.ChainEntry{Seq: f.Entry.Seq, Kind: vault.ChainKind(f.Entry.Kind), Time: time.Unix(0, f.Entry.TimeUnixNS), Principal: f.Entry.Principal}
	copy(e.Digest[:], unhex(f.Entry.Digest))
	copy(e.MAC[:], unhex(f.Entry.MAC))
	if !NewChainMAC(ChainKey(root, id), id).Verify(prev, e) {
		t.Error("the settings entry's MAC does not verify")
	}
	if !ValidChainKind(vault.ChainSettings) || !ValidChainKind(vault.ChainRecover) || ValidChainKind(vault.ChainRecover+1) || ValidChainKind(0) {
		t.Error("ValidChainKind does not take exactly kinds 1 to 8 (add … settings, recover)")
	}

	// Every field is bound, and so is the vault.
	base := all[0]
	want := SettingsDigest(id, base)
	for name, change := range map[string]func(*vault.VaultSettings){
		"soft delete":       func(s *vault.VaultSettings) { s.SoftDelete = vault.SoftDeleteOn },
		"soft delete days":  func(s *vault.VaultSettings) { s.SoftDeleteDays-- },
		"immutability":      func(s *vault.VaultSettings) { s.Immutability = vault.ImmutabilityDisabled },
		"minimum retention": func(s *vault.VaultSettings) { s.MinRetention-- },
		"single user":       func(s *vault.VaultSettings) { s.SingleUser = false },
		"policy":            func(s *vault.VaultSettings) { s.Policy = "" },
		"dedup scope":       func(s *vault.VaultSettings) { s.DedupScope = vault.DedupScopeVault },
	} {
		s := base
		change(&s)
		if SettingsDigest(id, s) == want {
			t.Errorf("the digest does not bind the %s", name)
		}
	}
	other := id
	other[0] ^= 1
	if SettingsDigest(other, base) == want {
		t.Error("the digest does not bind the vault")
	}
}
