package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/keys"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/store/s3"
	"github.com/coffer-backup/coffer/internal/vault"
)

// A vault may have a store of its own (coffer vault create NAME --store
// s3://BUCKET/PREFIX), in place of the server's default (a directory under
// the data directory, or the server's --store). Its URL is recorded so
// that every later start reopens the same store: in the catalog when
// servers share it (PostgreSQL), so that every server finds it, else in
// the vault's directory. It holds no credentials (the S3 store takes them
// from the standard AWS chain, never from the URL).

// storeURLFile is where vault name's own store URL is recorded on a
// server with a catalog of its own.
func storeURLFile(dataDir, name string) string {
	return filepath.Join(VaultDir(dataDir, name), "store.url")
}

// deployment returns the catalog's shared deployment state when servers
// share the catalog (docs/postgres.md, "Several servers"), else nil.
func (s *Server) deployment() vault.Deployment {
	if s.opt.Catalog == "" {
		return nil
	}
	d, _ := s.cat.(vault.Deployment)
	return d
}

// labelStoreURLSeal is the HKDF label of the key that seals vaults' own
// store URLs in a shared catalog, derived from the deployment key
// (docs/format.md §1.1e); it also starts each sealed URL's AAD.
const labelStoreURLSeal = "coffer/v1/store-url-seal"

const storeURLSealVersion = 0x01

// storeURLSeal seals the store URLs a shared catalog keeps. A URL names
// where the servers read and write a vault's objects, and what deleting
// the vault empties: whoever could write it could send a vault's backups
// to a copy of its store they saved (where they vanish when the row is put
// back), or make the deletion of one vault empty another's store. So the
// row is sealed under a key only the deployment's servers derive, bound
// to the vault's name.
type storeURLSeal struct{ key seal.Key }

func newStoreURLSeal(deploymentKey seal.Key) *storeURLSeal {
	return &storeURLSeal{key: seal.Derive(deploymentKey, nil, labelStoreURLSeal)}
}

func storeURLAAD(name string) []byte {
	return append(append([]byte(labelStoreURLSeal), 0), name...)
}

// seal: 0x01 || salt (32) || AES-256-GCM(HKDF(key, salt, label), 0^12,
// url, aad): a key per URL, so the zero nonce is used once.
func (u *storeURLSeal) seal(name, raw string) []byte {
	out := make([]byte, 1+32, 1+32+len(raw)+seal.Overhead)
	out[0] = storeURLSealVersion
	rand.Read(out[1:33])
	k := seal.Derive(u.key, out[1:33], labelStoreURLSeal)
	defer k.Wipe()
	var nonce [seal.NonceSize]byte
	return seal.NewAEAD(k).Seal(out, nonce[:], []byte(raw), storeURLAAD(name))
}

func (u *storeURLSeal) open(name string, b []byte) (string, error) {
	if len(b) >= 1+32+seal.Overhead && b[0] == storeURLSealVersion {
		k := seal.Derive(u.key, b[1:33], labelStoreURLSeal)
		defer k.Wipe()
		var nonce [seal.NonceSize]byte
		if pt, err := seal.NewAEAD(k).Open(nil, nonce[:], b[33:], storeURLAAD(name)); err == nil {
			return string(pt), nil
		}
	}
	// SECURITY: a URL a catalog writer made, or moved from another
	// vault's row, is never opened, written to or emptied.
	return "", fmt.Errorf("vault %q: %w: the catalog's record of its store does not open under this server's deployment key (written by someone without it, or moved from another vault): the vault is not opened; if the catalog was edited, put back the row from a backup of the database", name, vault.ErrWrongKey)
}

// vaultStoreURL returns vault name's own store URL, "" when it has none.
// On a shared catalog a URL recorded in the data directory (by a server
// of a release that kept it there) still counts, and is copied into the
// catalog for the other servers.
func (s *Server) vaultStoreURL(ctx context.Context, name string) (string, error) {
	d := s.deployment()
	var unsealed error // a URL an older catalog kept in plain text, not trusted
	if d != nil {
		b, err := d.VaultStore(ctx, name)
		if errors.Is(err, vault.ErrUnsealedStoreURL) {
			unsealed = err
		} else if err != nil {
			return "", err
		}
		if b != nil {
			return s.storeSeal.open(name, b)
		}
	}
	b, err := os.ReadFile(storeURLFile(s.opt.DataDir, name))
	if errors.Is(err, os.ErrNotExist) {
		return "", unsealed
	}
	if err != nil {
		return "", fmt.Errorf("vault %q: read its store's URL: %w", name, err)
	}
	raw := strings.TrimSpace(string(b))
	if raw == "" {
		return "", fmt.Errorf("vault %q: %s is empty: it should name the vault's store", name, storeURLFile(s.opt.DataDir, name))
	}
	if d != nil {
		if err := d.SetVaultStore(ctx, name, s.storeSeal.seal(name, raw)); err != nil {
			return "", err
		}
	}
	return raw, nil
}

// vaultNames lists the vaults the server's jobs go through: the
// directories under DATA/vaults and, on a shared catalog, the catalog's
// vaults (created through any server). Names that are not vault names
// (directories someone else put there) are returned apart.
func (s *Server) vaultNames(ctx context.Context) (names, strange []string, err error) {
	seen := map[string]bool{}
	entries, err := os.ReadDir(filepath.Join(s.opt.DataDir, "vaults"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("list vaults: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if !vaultName.MatchString(e.Name()) {
			strange = append(strange, e.Name())
			continue
		}
		seen[e.Name()] = true
	}
	if d := s.deployment(); d != nil {
		recs, err := d.Vaults(ctx)
		if err != nil {
			return nil, nil, err
		}
		for _, r := range recs {
			if vaultName.MatchString(r.Name) {
				seen[r.Name] = true
			}
		}
	}
	names = slices.Sorted(maps.Keys(seen))
	return names, strange, nil
}

// checkStoreURL refuses a store URL this server cannot open, with a
// message that says what it takes; it opens nothing.
func checkStoreURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return fmt.Errorf("%w: store: not a URL: want s3://BUCKET/PREFIX[?endpoint=https://HOST:PORT&region=REGION]", api.ErrBadRequest)
	}
	switch u.Scheme {
	case "s3":
		if _, err := s3.ParseURL(raw); err != nil {
			return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
		}
		return nil
	}
	return fmt.Errorf("%w: store: unknown scheme %q: a vault's own store is s3://BUCKET/PREFIX[?endpoint=https://HOST:PORT&region=REGION]; without a store the vault uses the server's", api.ErrBadRequest, u.Scheme)
}

// openStoreURL opens the store raw names (checkStoreURL's schemes).
func openStoreURL(ctx context.Context, raw string) (vault.Store, error) {
	if err := checkStoreURL(raw); err != nil {
		return nil, err
	}
	opt, err := s3.ParseURL(raw)
	if err != nil {
		return nil, err
	}
	return s3.Open(ctx, opt)
}

// recordStoreURL records vault name's own store URL ("" removes it): in
// the shared catalog, else in the vault's directory (mode 0600, replaced
// atomically).
func (s *Server) recordStoreURL(ctx context.Context, name, raw string) error {
	if d := s.deployment(); d != nil {
		var sealed []byte
		if raw != "" {
			sealed = s.storeSeal.seal(name, raw)
		}
		if err := d.SetVaultStore(ctx, name, sealed); err != nil {
			return err
		}
		// A file left by a release that kept the URL there must not
		// bring back a URL the catalog no longer has.
		if err := os.Remove(storeURLFile(s.opt.DataDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("vault %q: %w", name, err)
		}
		return nil
	}
	if raw == "" {
		if err := os.Remove(storeURLFile(s.opt.DataDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("vault %q: %w", name, err)
		}
		return nil
	}
	dir := VaultDir(s.opt.DataDir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".store.url-*")
	if err != nil {
		return err
	}
	_, err = f.WriteString(raw + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), storeURLFile(s.opt.DataDir, name))
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("vault %q: record its store's URL: %w", name, err)
	}
	return nil
}

// recoverVault is POST /v1/recover (coffer vault recover): owner only.
func (s *Server) recoverVault(q *request) error {
	var body api.RecoverVault
	if err := readJSON(q.w, q.r, &body); err != nil {
		return err
	}
	q.note("name", body.Name)
	// Only an owner holds vault.recover: recovering names the store to
	// trust and the key to use for a vault the catalog no longer knows.
	if body.Store != "" {
		if err := checkStoreURL(body.Store); err != nil {
			return err
		}
		q.note("store", body.Store)
	}
	if body.Key != "" {
		q.note("key", keys.Redact(body.Key))
		if err := s.checkKeyURI(body.Key); err != nil {
			return err
		}
	}
	eng, res, err := s.RecoverVault(q.ctx, body.Name, body.Store, body.Key, q.principal())
	if err != nil {
		return err
	}
	q.log.Info("vault recovered from its store", "vault", body.Name, "snapshots", len(res.Snapshots), "packs", len(res.Index.Added), "token", q.tok.ID)
	writeJSON(q.w, http.StatusOK, api.Recovered{Vault: vaultInfo(eng.Record(), eng.KeyInfo()), Snapshots: len(res.Snapshots),
		Packs: len(res.Index.Added), Unreadable: res.Unreadable})
	return nil
}

// RecoverVault rebuilds the catalog's part of vault name from its store
// and its key after the catalog was lost (docs/operations.md, recovery):
// storeURL, when given, is recorded as the vault's own store (else the
// server's default store is used); keyURI, when given, is the customer
// key its newest keyring is wrapped by, recorded for later opens (else
// the server's platform key, or a customer key whose URI the server
// kept). The vault is recorded from the store's config, its keyring
// anchored, its packs catalogued and its snapshots entered as recover
// entries (engine.Vault.Recover). A vault whose catalog record holds
// snapshots is refused.
func (s *Server) RecoverVault(ctx context.Context, name, storeURL, keyURI, principal string) (*engine.Vault, *engine.RecoverResult, error) {
	if !vaultName.MatchString(name) {
		return nil, nil, fmt.Errorf("%w: vault name %q: use 1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit", api.ErrBadRequest, name)
	}
	if _, err := s.cat.Vault(ctx, name); err == nil {
		if storeURL != "" {
			if own, _ := s.vaultStoreURL(ctx, name); own != storeURL {
				return nil, nil, fmt.Errorf("vault %q: %w: the catalog knows it with another store; recover only rebuilds a vault the catalog lost", name, vault.ErrExists)
			}
		}
	} else if !errors.Is(err, vault.ErrNotFound) {
		return nil, nil, vaultErr(name, err)
	} else if storeURL != "" {
		if err := checkStoreURL(storeURL); err != nil {
			return nil, nil, err
		}
		if err := s.recordStoreURL(ctx, name, storeURL); err != nil {
			return nil, nil, err
		}
	}
	if keyURI != "" {
		if err := s.recordRecoveryKey(ctx, name, keyURI); err != nil {
			return nil, nil, err
		}
	}
	eng, err := s.openFromStore(ctx, name)
	if err != nil {
		return nil, nil, fmt.Errorf("recover vault %q: %w", name, err)
	}
	res, err := eng.Recover(ctx, principal)
	if err != nil {
		return nil, nil, err
	}
	return eng, res, nil
}

// openFromStore opens vault name, which the catalog may not know: the
// engine then records it from its store (engine.Open).
func (s *Server) openFromStore(ctx context.Context, name string) (*engine.Vault, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ov, ok := s.vaults[name]; ok {
		return ov.eng, nil
	}
	st, err := s.openStore(ctx, name, true)
	if err != nil {
		return nil, err
	}
	p, err := s.providerFor(ctx, st)
	var eng *engine.Vault
	if err == nil {
		eng, err = engine.Open(ctx, s.engineOptions(ctx, name, st, p))
	}
	if err != nil {
		st.Close()
		return nil, err
	}
	ov := &openVault{eng: eng, store: st}
	s.armObjectLock(ctx, ov)
	s.vaults[name] = ov
	return eng, nil
}

// recordRecoveryKey records keyURI as the key that opens vault name's
// store, after checking that the store's newest keyring names that key.
func (s *Server) recordRecoveryKey(ctx context.Context, name, keyURI string) error {
	if err := s.checkKeyURI(keyURI); err != nil {
		return err
	}
	st, err := s.openStore(ctx, name, true)
	if err != nil {
		return err
	}
	defer st.Close()
	cfg, ki, err := engine.Inspect(ctx, st)
	if err != nil {
		return fmt.Errorf("recover vault %q: the store holds no vault Coffer can read: %w", name, err)
	}
	id, err := vault.ParseID(cfg.ID)
	if err != nil {
		return err
	}
	to, err := keys.Open(keyURI)
	if err != nil {
		if keyErr(err) {
			return err
		}
		return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	if c, ok := to.(io.Closer); ok {
		defer c.Close()
	}
	if to.Current() != ki.KEK {
		return fmt.Errorf("%w: recover vault %q: the store's keyring is wrapped by %s, but %s is %s", api.ErrBadRequest, name, ki.KEK, keys.Redact(keyURI), to.Current())
	}
	return s.keyConfig().Set(id, ki.KEK, keyURI)
}
