package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/keys"
	"github.com/coffer-backup/coffer/internal/keys/passphrase"
	"github.com/coffer-backup/coffer/internal/keys/platform"
	"github.com/coffer-backup/coffer/internal/store/local"
	"github.com/coffer-backup/coffer/internal/vault"
)

var vaultNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// location is where a local vault lives.
type location struct {
	name    string // shown to users: the vault's name, or its directory's
	dir     string
	keyFile string
}

// localCatalogName is the vault's name inside a local vault's own catalog.
// A local catalog holds exactly one vault, so the name is fixed and a
// vault directory can be moved or renamed freely.
const localCatalogName = "local"

func (a *app) cofferHome() (string, error) {
	if a.home != "" {
		return a.home, nil
	}
	if h := a.getenv("COFFER_HOME"); h != "" {
		return filepath.Abs(h)
	}
	if x := a.getenv("XDG_DATA_HOME"); x != "" {
		return filepath.Join(x, "coffer"), nil
	}
	home := a.getenv("HOME")
	if home == "" {
		var err error
		if home, err = os.UserHomeDir(); err != nil {
			return "", errors.New("cannot find a home for the default vault: set COFFER_HOME")
		}
	}
	return filepath.Join(home, ".local", "share", "coffer"), nil
}

func (a *app) locate() (location, error) {
	home, err := a.cofferHome()
	if err != nil {
		return location{}, err
	}
	ref := a.vaultRef
	if ref == "" {
		ref = "default"
	}
	var loc location
	switch {
	case isRemote(ref):
		return loc, fmt.Errorf("vault %s is on a server: this command works on local vaults only", ref)
	case strings.ContainsRune(ref, '/') || ref == "." || ref == "..":
		dir, err := filepath.Abs(ref)
		if err != nil {
			return loc, err
		}
		loc = location{name: filepath.Base(dir), dir: dir}
	default:
		if !vaultNameRE.MatchString(ref) {
			return loc, fmt.Errorf("invalid vault name %q: use letters, digits, '.', '_' and '-', or give a directory path", ref)
		}
		loc = location{name: ref, dir: filepath.Join(home, "vaults", ref)}
	}
	loc.keyFile = a.keyFile
	if loc.keyFile == "" {
		loc.keyFile = filepath.Join(home, "keys", "platform.key")
	}
	return loc, nil
}

// openedVault is an open local vault and what must be closed with it.
type openedVault struct {
	*engine.Vault
	loc     location
	keys    *platform.Keystore
	store   *local.Store
	catalog *sqlite.Catalog
	created bool
	// principal is who runs the command, for the vault's event trail.
	principal string
	provider  vault.KeyProvider // the KEK's provider, closed with the vault
}

func (o *openedVault) Close() error {
	o.Vault.Close()
	o.store.Close()
	closeProvider(o.provider)
	return o.catalog.Close()
}

// closeProvider releases what a key provider holds (a cloud KMS client's
// connections), when it holds anything.
func closeProvider(p vault.KeyProvider) {
	if c, ok := p.(io.Closer); ok {
		c.Close()
	}
}

// vaultExists reports whether dir holds a vault: its config, or, after an
// upgrade cut short between removing the format-1 config and writing its
// successor (docs/format.md §10), a keyring, from which Open restores it.
func vaultExists(dir string) bool {
	if _, err := os.Stat(filepath.Join(storePath(dir), "config")); err == nil {
		return true
	}
	ents, err := os.ReadDir(filepath.Join(storePath(dir), "keys"))
	return err == nil && len(ents) > 0
}

// vaultDirEntries are the entries a vault's directory holds, or holds
// part of when its creation was cut short.
var vaultDirEntries = map[string]bool{
	"store": true, "catalog.db": true, "catalog.db-wal": true, "catalog.db-shm": true, "catalog.db-journal": true,
}

// checkVaultDirFree refuses to make a vault in a directory that holds
// anything but a vault's own entries: --vault . in a project directory
// would otherwise mix the vault into it.
func checkVaultDirFree(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("vault directory %s: %w", dir, err)
	}
	refuse := func(name string) error {
		return fmt.Errorf("%s is not empty and holds no vault (it has %q): choose an empty or new directory for the vault (coffer creates it), or the directory of an existing vault", dir, name)
	}
	for _, e := range ents {
		if !vaultDirEntries[e.Name()] {
			return refuse(e.Name())
		}
	}
	// A "store" that is someone else's directory is not adopted either.
	ents, err = os.ReadDir(storePath(dir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return refuse("store")
	}
	for _, e := range ents {
		switch n := e.Name(); {
		case strings.HasPrefix(n, ".tmp-"), n == string(vault.ConfigObject) || n == string(vault.PackObject) || n == string(vault.SnapshotObject) || n == string(vault.KeyObject):
		default:
			return refuse(filepath.Join("store", n))
		}
	}
	return nil
}

func catalogPath(dir string) string { return filepath.Join(dir, "catalog.db") }
func storePath(dir string) string   { return filepath.Join(dir, "store") }

// openVault opens the selected local vault; with create it makes the vault
// (and the platform key file) on first use, or completes a vault whose
// creation was interrupted. Creating is safe against a crash at any step
// and against another process creating the same vault at the same moment
// (see engine.Create and platform.Create).
func (a *app) openVault(ctx context.Context, create bool) (*openedVault, error) {
	o, err := a.openVault0(ctx, create)
	if loc, lerr := a.locate(); lerr == nil {
		// The audit trail of the vault's key: a failure to reach it, and
		// the first success after one.
		a.keyOutcome(ctx, loc, o, err)
		if errors.Is(err, vault.ErrKeyUnavailable) {
			if _, _, kek, kerr := a.localKEK(ctx); kerr == nil && kek.Provider != platform.Provider {
				err = fmt.Errorf("%w%s", err, keyAdvice(ctx, loc.dir))
			}
		}
	}
	return o, err
}

func (a *app) openVault0(ctx context.Context, create bool) (*openedVault, error) {
	loc, err := a.locate()
	if err != nil {
		return nil, err
	}
	exists := vaultExists(loc.dir)
	if !exists && !create {
		return nil, fmt.Errorf("no vault at %s: %w (a first `coffer backup` creates it)", loc.dir, vault.ErrNotFound)
	}
	if !exists {
		if err := checkVaultDirFree(loc.dir); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(loc.dir, 0o700); err != nil {
		return nil, fmt.Errorf("create vault directory: %w", err)
	}
	st, err := local.Open(storePath(loc.dir))
	if err != nil {
		return nil, err
	}
	// The newest keyring names the key encryption key: the platform key
	// file, or a customer-managed key whose URI this machine keeps.
	var provider vault.KeyProvider
	var ks *platform.Keystore
	if exists {
		// The generation the catalog's anchor accepts names the key, not
		// an object planted above it in keys/ (docs/format.md §7.3).
		icat, _ := sqlite.Open(catalogPath(loc.dir))
		var cat vault.Catalog
		if icat != nil {
			cat = icat
			defer icat.Close()
		}
		cfg, ki, ierr := engine.InspectWith(ctx, st, cat)
		if ierr == nil && ki.KEK.Provider == passphrase.Name {
			// Passphrase slots travel in the keyring: the store and a
			// passphrase open the vault, no URI is kept.
			p, err := a.passphraseProvider(ctx, st, cat, loc.name)
			if err != nil {
				st.Close()
				return nil, err
			}
			provider = p
		} else if ierr == nil && ki.KEK.Provider != platform.Provider {
			id, perr := vault.ParseID(cfg.ID)
			if perr != nil {
				st.Close()
				return nil, perr
			}
			uri, err := a.keyConfig(loc).URI(id, ki.KEK)
			if err == nil {
				provider, err = keys.Open(uri)
			}
			if err != nil {
				st.Close()
				return nil, err
			}
		}
	}
	if provider == nil {
		if ks, err = a.platformKeys(loc, create && !exists); err != nil {
			st.Close()
			return nil, err
		}
		if create && !exists {
			// SECURITY: listed before anything is wrapped (key retire must
			// know the directory), and the key file read again after: a
			// retire that ran before the listing may have deleted the
			// version this process read as current.
			if err := a.listPendingVault(loc, ks); err != nil {
				st.Close()
				return nil, fmt.Errorf("list vault %s beside the key file (coffer key retire must know it): %w", loc.dir, err)
			}
			if ks, err = platform.Open(loc.keyFile); err != nil {
				st.Close()
				return nil, err
			}
		}
		provider = ks
	}
	cat, err := sqlite.Open(catalogPath(loc.dir))
	if err != nil {
		st.Close()
		return nil, err
	}
	if create {
		// Temporary files of a backup killed long ago; a running one's are
		// younger.
		if _, err := st.RemoveStaleTemp(24 * time.Hour); err != nil {
			fmt.Fprintf(a.stderr, "warning: could not remove old temporary files from %s: %v\n", storePath(loc.dir), err)
		}
	}
	opt := engine.Options{Store: st, Catalog: cat, Keys: provider, Name: localCatalogName, Now: a.now, OnFilter: a.filterBuilt}
	if opt.Pin, err = a.chainPin(); err != nil {
		cat.Close()
		st.Close()
		return nil, err
	}
	if opt.KeyPin, err = a.keyringPin(); err != nil {
		cat.Close()
		st.Close()
		return nil, err
	}
	opt.AcceptKeyringRollback = a.acceptKeyRollback
	if create {
		// A backup: registered as a writer, so that a prune running at
		// the same time waits for it before deleting what it may use.
		opt.Session = &vault.Session{Kind: "backup", Principal: a.principal()}
	}
	var v *engine.Vault
	if create {
		v, err = engine.Create(ctx, opt, engine.DefaultChunker())
	} else {
		v, err = engine.Open(ctx, opt)
	}
	if err != nil {
		cat.Close()
		st.Close()
		return nil, err
	}
	o := &openedVault{Vault: v, loc: loc, keys: ks, store: st, catalog: cat, created: !exists, provider: provider}
	if !exists && testHookVaultCreated != nil {
		testHookVaultCreated(loc.dir)
	}
	if create && !exists && !a.explicitCreate {
		// SECURITY: a vault made by a first backup is one person's: it is
		// single-user, so that nothing done to it is a one-way door
		// (oneway.go). A crash before this leaves it not single-user, the
		// stricter way. Vaults that exist already keep what they are.
		if err := a.setSingleUser(ctx, o, singleUserImplicit); err != nil {
			o.Close()
			return nil, fmt.Errorf("record the new vault as single-user: %w", err)
		}
	}
	if ks != nil {
		// SECURITY: coffer key retire deletes a platform key version only
		// when no vault it knows needs it; this is how it knows a vault
		// outside $COFFER_HOME/vaults.
		if err := a.listVault(loc, ks, v.Record().ID); err != nil {
			err = fmt.Errorf("list vault %s beside the key file (coffer key retire must know it): %w", loc.dir, err)
			if create {
				o.Close()
				return nil, err
			}
			fmt.Fprintf(a.stderr, "warning: %v\n", err)
		}
	}
	if create && ks != nil {
		// Backups keep the platform key fresh: rotate it when it is older
		// than the rotation period, and rewrap a vault still wrapped by an
		// older version (another vault's backup may have rotated the file).
		if err := a.rotatePlatformKey(ctx, o); err != nil {
			o.Close()
			return nil, err
		}
	}
	return o, nil
}

// testHookVaultCreated, set by tests only, runs after a vault's keys
// were wrapped and stored and before it is listed by ID beside the key
// file: the window in which a concurrent key retire must keep them.
var testHookVaultCreated func(dir string)

// defaultKEKRotation is how old the platform KEK may get before a backup
// rotates it (COFFER_KEK_ROTATION overrides; "off" disables).
const defaultKEKRotation = 90 * 24 * time.Hour

// kekRotation parses COFFER_KEK_ROTATION: a Go duration, a number of days
// ("90d"), or "off".
func (a *app) kekRotation() (time.Duration, error) {
	s := a.getenv("COFFER_KEK_ROTATION")
	switch {
	case s == "":
		return defaultKEKRotation, nil
	case s == "off" || s == "0":
		return 0, nil
	}
	d, err := parseDaysOrDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("COFFER_KEK_ROTATION=%q: want a number of days (90d), a duration (2160h) or off", s)
	}
	return d, nil
}

func (a *app) rotatePlatformKey(ctx context.Context, o *openedVault) error {
	period, err := a.kekRotation()
	if err != nil || period == 0 {
		return err
	}
	if o.KeyInfo().KEK.Provider != platform.Provider {
		return nil // wrapped by a customer key: theirs to rotate
	}
	if age := a.now().Sub(o.keys.Created()); age >= period {
		before := o.keys.Current()
		ref, err := o.keys.Rotate(a.now())
		if err != nil {
			return err
		}
		if ref != before {
			fmt.Fprintf(a.stderr, "platform key rotated: %s → %s (it was %s old; rotation period %s, COFFER_KEK_ROTATION)\n", before, ref, humanDuration(age.Round(time.Hour)), humanDuration(period))
			a.keyEvent(ctx, o, vault.KeyEventKEKRotate, ref.String(), fmt.Sprintf("platform key %s was %s old (rotation period %s)", before, humanDuration(age.Round(time.Hour)), humanDuration(period)), true)
		}
	}
	if kek := o.KeyInfo().KEK; kek != o.keys.Current() {
		if err := o.Rewrap(ctx, o.keys); err != nil {
			a.keyEvent(ctx, o, vault.KeyEventKEKRotate, kek.String(), "rewrap under the rotated platform key failed: "+err.Error(), false)
			return fmt.Errorf("rewrap under the rotated platform key: %w", err)
		}
		fmt.Fprintf(a.stderr, "vault keys rewrapped: %s → %s; nothing was re-encrypted\n", kek, o.keys.Current())
		a.keyEvent(ctx, o, vault.KeyEventKEKRotate, o.keys.Current().String(), "vault keys rewrapped from "+kek.String(), true)
		// The older version may be needed by no vault now.
		a.autoRetire(ctx, o.loc.keyFile)
	}
	return nil
}

// localKEK names the key encryption key of the selected local vault, read
// from its newest keyring without unwrapping anything.
func (a *app) localKEK(ctx context.Context) (location, vault.ID, vault.KeyRef, error) {
	loc, err := a.locate()
	if err != nil {
		return loc, vault.ID{}, vault.KeyRef{}, err
	}
	if !vaultExists(loc.dir) {
		return loc, vault.ID{}, vault.KeyRef{}, fmt.Errorf("no vault at %s: %w", loc.dir, vault.ErrNotFound)
	}
	st, err := local.Open(storePath(loc.dir))
	if err != nil {
		return loc, vault.ID{}, vault.KeyRef{}, err
	}
	defer st.Close()
	cfg, ki, err := engine.Inspect(ctx, st)
	if err != nil {
		return loc, vault.ID{}, vault.KeyRef{}, err
	}
	id, err := vault.ParseID(cfg.ID)
	return loc, id, ki.KEK, err
}

// platformKeys opens the platform key file; with create it makes it when
// it does not exist (a first backup), safely against another process doing
// the same at the same moment.
func (a *app) platformKeys(loc location, create bool) (*platform.Keystore, error) {
	ks, err := platform.Open(loc.keyFile)
	fresh := false
	if create && errors.Is(err, vault.ErrKeyUnavailable) {
		if _, serr := os.Stat(loc.keyFile); errors.Is(serr, fs.ErrNotExist) {
			ks, err = platform.Create(loc.keyFile, a.now())
			fresh = err == nil
			if errors.Is(err, vault.ErrExists) { // another process won the race
				ks, err = platform.Open(loc.keyFile)
			}
		} else if serr == nil {
			// Another process created it since our Open: use it.
			ks, err = platform.Open(loc.keyFile)
		}
	}
	if err == nil {
		// The list of vaults beside the key file starts with the key file;
		// one made later marks the versions before it as possibly used by
		// vaults it never saw (coffer key retire).
		if _, exists, lerr := loadVaultList(loc.keyFile); lerr == nil && !exists {
			if lerr := updateVaultList(loc.keyFile, ks, fresh, nil); lerr != nil {
				fmt.Fprintf(a.stderr, "warning: could not start the list of vaults beside %s: %v\n", loc.keyFile, lerr)
			}
		}
	}
	return ks, err
}

// keyConfig is where this machine keeps the URIs of customer-managed keys:
// beside the platform key file.
func (a *app) keyConfig(loc location) keys.Config {
	return keys.Config{Dir: filepath.Join(filepath.Dir(loc.keyFile), "cmk")}
}

// inspectLocal describes the selected local vault from its store alone,
// without its keys, for `vault show` when keyErr kept it from opening.
func (a *app) inspectLocal(ctx context.Context, keyErr error) (vaultInfo, error) {
	loc, err := a.locate()
	if err != nil {
		return vaultInfo{}, err
	}
	st, err := local.Open(storePath(loc.dir))
	if err != nil {
		return vaultInfo{}, err
	}
	defer st.Close()
	cfg, ki, err := engine.Inspect(ctx, st)
	if err != nil {
		return vaultInfo{}, errors.Join(keyErr, err)
	}
	vi := vaultInfo{Location: loc.dir, KeyFile: loc.keyFile, KeyError: keyErr.Error(), VaultInfo: api.VaultInfo{
		Name: loc.name, ID: cfg.ID, Created: cfg.Created, Algorithm: ki.Algorithm,
		KeySource: ki.KeySource, KEKProvider: ki.KEK.Provider, KEKID: ki.KEK.KeyID, KEKVersion: ki.KEK.Version,
		WrapAlg: ki.WrapAlg, DEKVersion: ki.DEKVersion, DEKCount: ki.DEKCount, LastRotated: ki.LastRotated, KeyringGen: ki.KeyringGen,
	}}
	if cat, err := sqlite.Open(catalogPath(loc.dir)); err == nil {
		defer cat.Close()
		if rec, err := cat.Vault(ctx, localCatalogName); err == nil {
			if snaps, err := cat.Snapshots(ctx, rec.ID); err == nil {
				vi.Snapshots = len(snaps)
			}
			if n, size, err := cat.PackTotals(ctx, rec.ID); err == nil {
				vi.Packs, vi.StoredBytes = n, size
			}
		}
	}
	return vi, nil
}
