package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/client"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/localcopy"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// maxLocalCopies bounds --local-copies.
const maxLocalCopies = 100

// localCopyIdentity names the vault the local copies are of, without
// opening it: the server's vault URL, or the local vault's directory.
func (a *app) localCopyIdentity() (string, error) {
	if isRemote(a.vaultRef) {
		server, name, err := client.SplitVaultURL(a.vaultRef)
		if err != nil {
			return "", err
		}
		return strings.TrimSuffix(server, "/") + "/" + name, nil
	}
	loc, err := a.locate()
	if err != nil {
		return "", err
	}
	return "local:" + loc.dir, nil
}

// localCopyOptions locate this vault's cache: $COFFER_HOME/local-copies/
// <hash of the vault's identity>, and the machine-local secret its lease
// is sealed with ($COFFER_LOCAL_SECRET, default
// $COFFER_HOME/keys/local-copies.secret, outside every cache directory).
func (a *app) localCopyOptions(lease time.Duration) (localcopy.Options, error) {
	id, err := a.localCopyIdentity()
	if err != nil {
		return localcopy.Options{}, err
	}
	home, err := a.cofferHome()
	if err != nil {
		return localcopy.Options{}, err
	}
	sum := sha256.Sum256([]byte(id))
	secret := a.getenv("COFFER_LOCAL_SECRET")
	if secret == "" {
		secret = filepath.Join(home, "keys", "local-copies.secret")
	}
	return localcopy.Options{Dir: filepath.Join(home, "local-copies", hex.EncodeToString(sum[:8])), Secret: secret,
		Vault: id, Now: a.now, Lease: lease}, nil
}

// remoteCacheKeys wraps the cache key through the server, for this
// agent's own identity.
type remoteCacheKeys struct{ v *remoteVault }

func (r remoteCacheKeys) NewKey(ctx context.Context) (seal.Key, []byte, error) {
	k, w, err := r.v.LocalCopyKey(ctx, nil)
	return seal.Key(k), w, err
}

func (r remoteCacheKeys) Unwrap(ctx context.Context, wrapped []byte) (seal.Key, error) {
	k, _, err := r.v.LocalCopyKey(ctx, wrapped)
	switch {
	case errors.Is(err, vault.ErrConflict):
		return seal.Key{}, fmt.Errorf("%w: %v", localcopy.ErrReset, err)
	case errors.Is(err, api.ErrUnauthenticated), errors.Is(err, api.ErrForbidden), errors.Is(err, api.ErrBadRequest),
		errors.Is(err, vault.ErrKeyUnavailable), errors.Is(err, vault.ErrWrongKey):
		// The server answered: it will not unwrap the key for this token.
		return seal.Key{}, fmt.Errorf("%w: %v", localcopy.ErrRefused, err)
	}
	return seal.Key(k), err
}

// localCacheKeys wraps the cache key with a local vault's key provider
// (its platform key file or customer-managed key).
type localCacheKeys struct{ o *openedVault }

func (l localCacheKeys) aad() []byte {
	return seal.KeyAAD(l.o.Record().ID, "local-copy-key\x00local", 1)
}

func (l localCacheKeys) NewKey(ctx context.Context) (seal.Key, []byte, error) {
	k := seal.NewRandomKey()
	w, err := l.o.provider.Wrap(ctx, k[:], l.aad())
	if err != nil {
		return seal.Key{}, nil, fmt.Errorf("wrap local-copy key: %w", err)
	}
	b, err := json.Marshal(w)
	return k, b, err
}

func (l localCacheKeys) Unwrap(ctx context.Context, wrapped []byte) (seal.Key, error) {
	var w vault.WrappedKey
	if err := json.Unmarshal(wrapped, &w); err != nil {
		return seal.Key{}, fmt.Errorf("%w: %v", localcopy.ErrReset, err)
	}
	if cur := l.o.provider.Current(); w.KEK.Provider != cur.Provider || w.KEK.KeyID != cur.KeyID {
		return seal.Key{}, fmt.Errorf("%w: it was wrapped under %s, which the vault no longer uses", localcopy.ErrReset, w.KEK)
	}
	b, err := l.o.provider.Unwrap(ctx, w, l.aad())
	if err != nil {
		if errors.Is(err, vault.ErrKeyUnavailable) {
			return seal.Key{}, fmt.Errorf("%w: unwrap local-copy key: %w", localcopy.ErrRefused, err)
		}
		return seal.Key{}, fmt.Errorf("%w: %v", localcopy.ErrReset, err)
	}
	defer clear(b)
	var k seal.Key
	if len(b) != len(k) {
		return k, fmt.Errorf("%w: %d bytes", localcopy.ErrReset, len(b))
	}
	copy(k[:], b)
	return k, nil
}

// cacheKeys is the key source of an open vault.
func cacheKeys(v conn) localcopy.KeySource {
	switch v := v.(type) {
	case *remoteVault:
		return remoteCacheKeys{v}
	case *openedVault:
		return localCacheKeys{v}
	}
	return nil
}

// leaseHelp says how to get a lease back.
const leaseHelp = "renew it while the vault is reachable: coffer local-copies renew, or the next coffer backup --local-copies N"

// openLocalCopies opens this vault's cache offline, with errors that say
// what to do.
func (a *app) openLocalCopies(ctx context.Context) (*localcopy.Cache, error) {
	opt, err := a.localCopyOptions(0)
	if err != nil {
		return nil, err
	}
	c, err := localcopy.OpenOffline(ctx, opt, func() {
		fmt.Fprintln(a.stderr, "waiting for the backup that is updating the local copies...")
	})
	switch {
	case errors.Is(err, localcopy.ErrLeaseExpired):
		return nil, fmt.Errorf("%w: the local copies of %s cannot be read without the vault: %s", err, opt.Vault, leaseHelp)
	case errors.Is(err, localcopy.ErrNoCache):
		return nil, fmt.Errorf("%w of %s on this machine: back up with --local-copies N to keep some", err, opt.Vault)
	}
	return c, err
}

// findLocalCopy resolves ref among the cache's snapshots that sel
// selects; not found lists what is held.
func findLocalCopy(c *localcopy.Cache, ref string, sel selection) (vault.SnapshotRecord, error) {
	var snaps []vault.SnapshotRecord
	for _, e := range c.Entries() {
		if sel.Match(e.Snapshot) {
			snaps = append(snaps, e.Snapshot)
		}
	}
	s, err := engine.FindSnapshot(snaps, ref)
	if err == nil {
		return s, nil
	}
	var held []string
	for _, e := range c.Entries() {
		held = append(held, fmt.Sprintf("%s (%s, %s)", e.Snapshot.ID.Short(), e.Snapshot.Time.UTC().Format(time.RFC3339), strings.Join(e.Snapshot.Paths, " ")))
	}
	if len(held) == 0 {
		held = []string{"none"}
	}
	return s, fmt.Errorf("snapshot %s is not among the local copies: %w (held: %s); restore it from the vault with --from vault", safeText(ref), err, safeText(strings.Join(held, "; ")))
}

func newLocalCopiesCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "local-copies",
		Short: "List or renew the encrypted local copies of this vault's snapshots",
		Long: `The encrypted local fast-restore copies that coffer backup --local-copies N
keeps under $COFFER_HOME/local-copies (docs/operations.md, "Local copies").
They are sealed under a key that the vault wraps; between backups this
machine holds it as a lease that ends after --local-lease (default 7 days).
While the lease holds, coffer restore --from local restores them with no
network; once it has ended they can be read only after the vault renews it.`,
	}
	var lease time.Duration
	renew := &cobra.Command{
		Use:   "renew",
		Short: "Renew the key lease of the local copies through the vault",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			opt, err := a.localCopyOptions(lease)
			if err != nil {
				return err
			}
			v, err := a.open(ctx, false)
			if err != nil {
				return err
			}
			defer v.Close()
			until, err := localcopy.Renew(ctx, opt, cacheKeys(v))
			if errors.Is(err, localcopy.ErrReset) {
				return fmt.Errorf("%w: the vault does not open this cache's key for this identity any more: the next backup with --local-copies starts a new cache", err)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "local-copy key lease renewed until %s\n", until.Format(time.RFC3339))
			return nil
		},
	}
	renew.Flags().DurationVar(&lease, "local-lease", localcopy.DefaultLease, "how long the local copies stay readable without the vault (1m to 2160h)")
	var jsonOut bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the snapshots held locally (needs an unexpired lease)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.openLocalCopies(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			if jsonOut {
				var out []map[string]any
				for _, e := range c.Entries() {
					s := e.Snapshot
					out = append(out, map[string]any{"snapshot_id": s.ID.String(), "time": s.Time, "host": s.Host, "paths": s.Paths, "tags": s.Tags})
				}
				enc := json.NewEncoder(a.jsonStdout)
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"lease_expires": c.Expires, "cipher": localcopy.Cipher, "snapshots": out})
			}
			for _, e := range c.Entries() {
				s := e.Snapshot
				fmt.Fprintf(a.stdout, "%s  %s  %s  %s\n", s.ID.Short(), s.Time.UTC().Format(time.RFC3339), safeText(s.Host), safeText(strings.Join(s.Paths, " ")))
			}
			fmt.Fprintf(a.stdout, "%s held, sealed with %s; key lease until %s\n", plural(len(c.Entries()), "snapshot", "snapshots"), localcopy.Cipher, c.Expires.Format(time.RFC3339))
			return nil
		},
	}
	list.Flags().BoolVar(&jsonOut, "json", false, "print the list as JSON")
	cmd.AddCommand(list, renew)
	return cmd
}
