package server

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/store/s3"
	"github.com/coffer-backup/coffer/internal/vault"
)

// A vault may have a store of its own (coffer vault create NAME --store
// s3://BUCKET/PREFIX), in place of the server's default (a directory under
// the data directory, or the server's --store). Its URL is recorded in
// the vault's directory, so that every later start reopens the same
// store; it holds no credentials (the S3 store takes them from the
// standard AWS chain, never from the URL).

// storeURLFile is where vault name's own store URL is recorded.
func storeURLFile(dataDir, name string) string {
	return filepath.Join(VaultDir(dataDir, name), "store.url")
}

// vaultStoreURL returns vault name's own store URL, "" when it has none.
func (s *Server) vaultStoreURL(name string) (string, error) {
	b, err := os.ReadFile(storeURLFile(s.opt.DataDir, name))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("vault %q: read its store's URL: %w", name, err)
	}
	raw := strings.TrimSpace(string(b))
	if raw == "" {
		return "", fmt.Errorf("vault %q: %s is empty: it should name the vault's store", name, storeURLFile(s.opt.DataDir, name))
	}
	return raw, nil
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

// recordStoreURL writes vault name's own store URL (mode 0600, replaced
// atomically).
func (s *Server) recordStoreURL(name, raw string) error {
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
