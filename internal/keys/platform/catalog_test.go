package platform_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/keys/keytest"
	"github.com/coffer-backup/coffer/internal/keys/platform"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// memRows is a catalog's platform_keys table in memory, which tests edit
// as a catalog writer would.
type memRows struct {
	mu   sync.Mutex
	rows map[int]vault.SealedKEK
}

func newMemRows() *memRows { return &memRows{rows: map[int]vault.SealedKEK{}} }

func (m *memRows) PlatformKeys(context.Context) ([]vault.SealedKEK, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []vault.SealedKEK
	for _, r := range m.rows {
		r.Sealed = bytes.Clone(r.Sealed)
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b vault.SealedKEK) int { return a.Version - b.Version })
	return out, nil
}

func (m *memRows) AddPlatformKey(_ context.Context, k vault.SealedKEK) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.rows[k.Version]; ok {
		return vault.ErrExists
	}
	m.rows[k.Version] = k
	return nil
}

func (m *memRows) DeletePlatformKeys(_ context.Context, keyID string, vs []int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, v := range vs {
		if r, ok := m.rows[v]; ok && r.KeyID == keyID {
			delete(m.rows, v)
		}
	}
	return nil
}

// edit changes row v as a catalog writer would.
func (m *memRows) edit(v int, fn func(*vault.SealedKEK)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.rows[v]
	fn(&r)
	m.rows[v] = r
}

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// TestCatalogConformance runs the key provider suite on the platform key
// kept in a catalog.
func TestCatalogConformance(t *testing.T) {
	keytest.Run(t, keytest.Harness{
		Revocation:  keytest.RevokeAtOpen,
		SecretSizes: []int{32},
		New: func(t *testing.T) *keytest.Fixture {
			rows, dk := newMemRows(), seal.NewRandomKey()
			ks, err := platform.CreateInCatalog(rows, dk, "", nil, t0)
			if err != nil {
				t.Fatal(err)
			}
			var saved map[int]vault.SealedKEK
			return &keytest.Fixture{
				Provider: ks,
				Reopen: func(*testing.T) (vault.KeyProvider, error) {
					ks, err := platform.OpenCatalog(rows, dk, "")
					if err != nil {
						return nil, err
					}
					return ks, nil
				},
				Revoke: func(*testing.T) {
					rows.mu.Lock()
					saved, rows.rows = rows.rows, map[int]vault.SealedKEK{}
					rows.mu.Unlock()
				},
				Restore: func(*testing.T) {
					rows.mu.Lock()
					rows.rows = saved
					rows.mu.Unlock()
				},
				Names: []string{"the catalog"},
			}
		},
	})
}

// TestCatalogRotateAndRetire: two servers on one catalog (the same
// deployment key, each its own keystore) see each other's rotation, never
// add two keys under one version, and a retired version is gone for both.
func TestCatalogRotateAndRetire(t *testing.T) {
	ctx := context.Background()
	rows, dk := newMemRows(), seal.NewRandomKey()
	a, err := platform.CreateInCatalog(rows, dk, "", nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := platform.CreateInCatalog(rows, dk, "", nil, t0) // a made it first: b opens a's
	if err != nil || b.ID() != a.ID() {
		t.Fatalf("second create: %v, %v; want a's key %s", b, err, a.ID())
	}
	secret, aad := bytes.Repeat([]byte{7}, 32), []byte("aad")
	w1, err := b.Wrap(ctx, secret, aad)
	if err != nil {
		t.Fatal(err)
	}
	if ref, err := a.Rotate(t0.Add(time.Hour)); err != nil || ref.Version != "2" {
		t.Fatalf("rotate through a: %v %v", ref, err)
	}
	// b, not knowing, rotates too: it adopts a's v2 rather than adding one.
	if ref, err := b.Rotate(t0.Add(2 * time.Hour)); err != nil || ref.Version != "2" || len(rows.rows) != 2 {
		t.Fatalf("rotate through b after a: %v %v, %d rows", ref, err, len(rows.rows))
	}
	w2, err := b.Wrap(ctx, secret, aad)
	if err != nil || w2.KEK.Version != "2" {
		t.Fatalf("wrap through b: %v %v", w2.KEK, err)
	}
	if got, err := a.Unwrap(ctx, w2, aad); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("a unwraps b's v2: %v", err)
	}
	if del, err := a.Retire([]int{1, 2}); err != nil || !slices.Equal(del, []int{1}) {
		t.Fatalf("retire: %v %v; want v1 (never the current)", del, err)
	}
	c, err := platform.OpenCatalog(rows, dk, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Unwrap(ctx, w1, aad); !errors.Is(err, vault.ErrKeyUnavailable) {
		t.Errorf("a v1 record after retirement: %v, want ErrKeyUnavailable", err)
	}
}

// TestAttackCatalogPlatformKey: someone who can write the catalog but does
// not hold the deployment key cannot add a platform key version it knows,
// move a sealed version to another version number, key or time, nor roll
// the platform key back to an older version: a server opening the catalog
// refuses it, and a running server keeps wrapping under the newest
// version it has read.
func TestAttackCatalogPlatformKey(t *testing.T) {
	ctx := context.Background()
	secret, aad := bytes.Repeat([]byte{9}, 32), []byte("aad")
	setup := func(t *testing.T) (*memRows, seal.Key, *platform.Keystore, string) {
		t.Helper()
		rows, dk := newMemRows(), seal.NewRandomKey()
		seen := filepath.Join(t.TempDir(), "platform.seen")
		ks, err := platform.CreateInCatalog(rows, dk, seen, nil, t0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ks.Rotate(t0.Add(24 * time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, err := platform.OpenCatalog(rows, dk, seen); err != nil { // records v2 as seen
			t.Fatal(err)
		}
		return rows, dk, ks, seen
	}
	refused := func(t *testing.T, rows *memRows, dk seal.Key, seen string, want error) {
		t.Helper()
		if ks, err := platform.OpenCatalog(rows, dk, seen); !errors.Is(err, want) {
			t.Errorf("open after the edit: %v (current %v), want %v", err, currentOf(ks), want)
		}
	}
	wrapsUnderV2 := func(t *testing.T, ks *platform.Keystore) {
		t.Helper()
		w, err := ks.Wrap(ctx, secret, aad)
		if err == nil && w.KEK.Version != "2" {
			t.Errorf("the running server wraps under v%s after the edit, want v2 (or a refusal)", w.KEK.Version)
		}
	}

	t.Run("row moved to another version", func(t *testing.T) {
		rows, dk, ks, seen := setup(t)
		v1 := rows.rows[1]
		rows.edit(2, func(r *vault.SealedKEK) { r.Sealed = v1.Sealed })
		refused(t, rows, dk, seen, vault.ErrWrongKey)
		wrapsUnderV2(t, ks)
	})
	t.Run("version it made itself", func(t *testing.T) {
		rows, dk, ks, seen := setup(t)
		mine := seal.NewRandomKey()
		other := seal.NewRandomKey() // sealed under a deployment key of its own
		sealed := seal.Wrap(seal.Derive(other, nil, platform.LabelCatalogSeal), mine, []byte("anything"))
		rows.AddPlatformKey(ctx, vault.SealedKEK{KeyID: ks.ID(), Version: 3, Created: t0.Add(48 * time.Hour), Sealed: sealed})
		refused(t, rows, dk, seen, vault.ErrWrongKey)
		wrapsUnderV2(t, ks)
		if _, err := ks.Rotate(t0.Add(100 * 24 * time.Hour)); err == nil {
			t.Error("a rotation over a forged version succeeded")
		}
	})
	t.Run("garbage version", func(t *testing.T) {
		rows, dk, ks, seen := setup(t)
		rows.AddPlatformKey(ctx, vault.SealedKEK{KeyID: ks.ID(), Version: 3, Created: t0, Sealed: []byte("not sealed")})
		refused(t, rows, dk, seen, vault.ErrWrongKey)
		wrapsUnderV2(t, ks)
	})
	t.Run("time changed", func(t *testing.T) {
		// Making the current version look new would put off its rotation.
		rows, dk, ks, seen := setup(t)
		rows.edit(2, func(r *vault.SealedKEK) { r.Created = r.Created.Add(365 * 24 * time.Hour) })
		refused(t, rows, dk, seen, vault.ErrWrongKey)
		wrapsUnderV2(t, ks)
	})
	t.Run("key id changed", func(t *testing.T) {
		rows, dk, _, seen := setup(t)
		for _, v := range []int{1, 2} {
			rows.edit(v, func(r *vault.SealedKEK) { r.KeyID = "0123456789abcdef" })
		}
		refused(t, rows, dk, seen, vault.ErrWrongKey)
	})
	t.Run("newest version deleted", func(t *testing.T) {
		// A rollback to v1: the running server keeps v2, and a server that
		// read v2 before refuses the catalog after a restart.
		rows, dk, ks, seen := setup(t)
		rows.DeletePlatformKeys(ctx, ks.ID(), []int{2})
		wrapsUnderV2(t, ks)
		refused(t, rows, dk, seen, vault.ErrKeyUnavailable)
		if _, err := ks.Rotate(t0.Add(100 * 24 * time.Hour)); err == nil {
			t.Error("a rotation over a rolled-back catalog succeeded")
		}
	})
	t.Run("rows from another deployment", func(t *testing.T) {
		rows, _, _, seen := setup(t)
		refused(t, rows, seal.NewRandomKey(), seen, vault.ErrWrongKey)
	})
}

func currentOf(ks *platform.Keystore) string {
	if ks == nil {
		return "none"
	}
	return "v" + ks.Current().Version
}

// TestDeploymentKeyFile: the first server makes the deployment key file
// (0600) and a second finds it; a missing file is not made without
// create, and a file that is not one is refused.
func TestDeploymentKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "deployment.key")
	if _, _, err := platform.LoadDeploymentKey(path, false); !errors.Is(err, vault.ErrKeyUnavailable) {
		t.Errorf("missing file without create: %v", err)
	}
	k1, made, err := platform.LoadDeploymentKey(path, true)
	if err != nil || !made {
		t.Fatalf("create: %v, made %v", err, made)
	}
	k2, made, err := platform.LoadDeploymentKey(path, true)
	if err != nil || made || k1 != k2 {
		t.Fatalf("second load: %v, made %v, same %v", err, made, k1 == k2)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode: %v %v", fi, err)
	}
	os.WriteFile(path, []byte(strconv.Quote("nope")), 0o600)
	if _, _, err := platform.LoadDeploymentKey(path, false); !errors.Is(err, vault.ErrKeyUnavailable) {
		t.Errorf("a file that is not a deployment key: %v", err)
	}
}

// TestCatalogSealVectors: frozen rows sealed as docs/format.md §1.1e says
// open to the KEKs they were made from, and a flipped byte in any field is
// refused.
func TestCatalogSealVectors(t *testing.T) {
	ctx := context.Background()
	b, err := os.ReadFile(filepath.Join("testdata", "catalog-seal.json"))
	if err != nil {
		t.Fatal(err)
	}
	var vec struct {
		DK   string `json:"deployment_key"`
		Rows []struct {
			KeyID   string    `json:"key_id"`
			Version int       `json:"version"`
			Created time.Time `json:"created"`
			Sealed  string    `json:"sealed"`
			KEK     string    `json:"kek"`
		} `json:"rows"`
	}
	if err := json.Unmarshal(b, &vec); err != nil {
		t.Fatal(err)
	}
	var dk seal.Key
	if n, err := hex.Decode(dk[:], []byte(vec.DK)); err != nil || n != seal.KeySize {
		t.Fatalf("deployment key: %v", err)
	}
	load := func(edit func(i int, r *vault.SealedKEK)) *memRows {
		rows := newMemRows()
		for i, r := range vec.Rows {
			sealed, err := hex.DecodeString(r.Sealed)
			if err != nil {
				t.Fatal(err)
			}
			k := vault.SealedKEK{KeyID: r.KeyID, Version: r.Version, Created: r.Created, Sealed: sealed}
			if edit != nil {
				edit(i, &k)
			}
			rows.AddPlatformKey(ctx, k)
		}
		return rows
	}
	ks, err := platform.OpenCatalog(load(nil), dk, "")
	if err != nil {
		t.Fatal(err)
	}
	last := vec.Rows[len(vec.Rows)-1]
	if ks.Current().Version != strconv.Itoa(last.Version) || !ks.Created().Equal(last.Created) {
		t.Errorf("current %v created %v; want v%d created %v", ks.Current(), ks.Created(), last.Version, last.Created)
	}
	secret, aad := bytes.Repeat([]byte{3}, 32), []byte("aad")
	for _, r := range vec.Rows {
		var kek, s seal.Key
		hex.Decode(kek[:], []byte(r.KEK))
		copy(s[:], secret)
		w := vault.WrappedKey{KEK: vault.KeyRef{Provider: platform.Provider, KeyID: r.KeyID, Version: strconv.Itoa(r.Version)},
			Alg: platform.Alg, Data: seal.Wrap(kek, s, aad)}
		if got, err := ks.Unwrap(ctx, w, aad); err != nil || !bytes.Equal(got, secret) {
			t.Errorf("v%d does not open to its KEK: %v", r.Version, err)
		}
	}
	edits := map[string]func(i int, r *vault.SealedKEK){
		"sealed":  func(i int, r *vault.SealedKEK) { r.Sealed[len(r.Sealed)-1] ^= 1 },
		"created": func(i int, r *vault.SealedKEK) { r.Created = r.Created.Add(time.Nanosecond) },
		"version": func(i int, r *vault.SealedKEK) { r.Version += 10 },
		"key id":  func(i int, r *vault.SealedKEK) { r.KeyID = "0123456789abcdee" },
	}
	for name, edit := range edits {
		for i := range vec.Rows {
			rows := load(func(j int, r *vault.SealedKEK) {
				if j == i {
					edit(j, r)
				}
			})
			if _, err := platform.OpenCatalog(rows, dk, ""); !errors.Is(err, vault.ErrWrongKey) {
				t.Errorf("row %d with its %s changed: %v, want ErrWrongKey", i, name, err)
			}
		}
	}
}
