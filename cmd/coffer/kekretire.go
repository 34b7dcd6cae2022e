package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/fsutil"
	"github.com/coffer-backup/coffer/internal/keys/platform"
	"github.com/coffer-backup/coffer/internal/store/local"
	"github.com/coffer-backup/coffer/internal/vault"
)

// The list of vaults beside the platform key file (docs/keys.md,
// "Retiring platform key versions"): every vault directory opened with
// the key file, so that coffer key retire knows every vault whose keyring
// a version may wrap before it deletes that version. Vaults under
// $COFFER_HOME/vaults not opened since the list began are found by
// listing that directory.

const vaultListKind = "coffer-platform-key-vaults"

type vaultList struct {
	Kind  string `json:"kind"`
	Fmt   int    `json:"format"`
	KeyID string `json:"key_id"`
	// UnlistedUpTo: versions up to this one existed before the list did,
	// and may wrap vaults it never saw; they are kept until someone
	// confirms the list is complete (coffer key retire --all-listed). 0:
	// the list has known every vault since the key file was made.
	UnlistedUpTo int           `json:"unlisted_up_to"`
	Vaults       []listedVault `json:"vaults"`
}

type listedVault struct {
	Path  string    `json:"path"`
	ID    string    `json:"id"`
	Added time.Time `json:"added"`
}

// vaultListPath is the list's file: platform.key → platform.vaults.
func vaultListPath(keyFile string) string {
	return strings.TrimSuffix(keyFile, ".key") + ".vaults"
}

// loadVaultList reads the list beside keyFile; exists is false when
// there is none yet. A list that does not parse is an error: retirement
// then deletes nothing.
func loadVaultList(keyFile string) (l vaultList, exists bool, err error) {
	path := vaultListPath(keyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return l, false, nil
	}
	if err != nil {
		return l, false, fmt.Errorf("read the list of vaults %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &l); err != nil || l.Kind != vaultListKind || l.Fmt != 1 {
		return l, true, fmt.Errorf("%s is not a list of coffer vaults (damaged?): restore it from a copy, or move it away and run coffer key retire --all-listed after opening each vault directory once", path)
	}
	return l, true, nil
}

func writeVaultList(keyFile string, l vaultList) error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileSync(vaultListPath(keyFile), append(b, '\n'), 0o600)
}

// updateVaultList changes the list under the key file's lock, creating
// it when missing: with every version of ks unlisted, unless fresh (the
// key file was made just now, so no vault can have used it unlisted).
func updateVaultList(keyFile string, ks *platform.Keystore, fresh bool, change func(*vaultList) bool) error {
	unlock, err := platform.Lock(keyFile)
	if err != nil {
		return fmt.Errorf("lock %s: %w", keyFile, err)
	}
	defer unlock()
	l, exists, err := loadVaultList(keyFile)
	if err != nil {
		return err
	}
	dirty := !exists
	if !exists {
		l = vaultList{Kind: vaultListKind, Fmt: 1, KeyID: ks.ID(), Vaults: []listedVault{}}
		if !fresh {
			l.UnlistedUpTo, _ = strconv.Atoi(ks.Current().Version)
		}
	}
	if change != nil && change(&l) {
		dirty = true
	}
	if !dirty {
		return nil
	}
	return writeVaultList(keyFile, l)
}

// listVault records the vault in loc, opened with the platform key file
// ks, in the list beside the key file (once). Vaults under
// $COFFER_HOME/vaults are listed too: the same key file may serve
// several homes (--key-file).
func (a *app) listVault(loc location, ks *platform.Keystore, id vault.ID) error {
	listed := func(l *vaultList) bool {
		return slices.ContainsFunc(l.Vaults, func(v listedVault) bool { return v.Path == loc.dir && v.ID == id.String() })
	}
	pending := func(l *vaultList) bool {
		return slices.ContainsFunc(l.Vaults, func(v listedVault) bool { return v.Path == loc.dir && v.ID == "" })
	}
	if l, exists, err := loadVaultList(loc.keyFile); err == nil && exists && listed(&l) && !pending(&l) {
		return nil // a read, no write
	}
	return updateVaultList(loc.keyFile, ks, false, func(l *vaultList) bool {
		if listed(l) && !pending(l) {
			return false
		}
		// The vault's ID replaces the pending entry (listPendingVault).
		l.Vaults = slices.DeleteFunc(l.Vaults, func(v listedVault) bool { return v.Path == loc.dir && v.ID == "" })
		if !listed(l) {
			l.Vaults = append(l.Vaults, listedVault{Path: loc.dir, ID: id.String(), Added: a.now().UTC()})
		}
		return true
	})
}

// listPendingVault lists loc's directory beside the key file with no ID
// yet, before a vault is created there: SECURITY: the list must name the
// directory before any key is wrapped under a platform key version, or a
// key retire in another process between the wrap and the listing could
// delete that version. Retire treats a pending entry as needing what the
// directory's keyring names, and every version while the directory holds
// no readable vault (being created, or cut short: --forget drops it).
func (a *app) listPendingVault(loc location, ks *platform.Keystore) error {
	return updateVaultList(loc.keyFile, ks, false, func(l *vaultList) bool {
		if slices.ContainsFunc(l.Vaults, func(v listedVault) bool { return v.Path == loc.dir }) {
			return false
		}
		l.Vaults = append(l.Vaults, listedVault{Path: loc.dir, Added: a.now().UTC()})
		return true
	})
}

// unlistVault removes dir from the list (the vault was deleted).
func (a *app) unlistVault(keyFile, dir string) error {
	_, exists, err := loadVaultList(keyFile)
	if err != nil || !exists {
		return err
	}
	ks, err := platform.Open(keyFile)
	if err != nil {
		return err
	}
	return updateVaultList(keyFile, ks, false, func(l *vaultList) bool {
		n := len(l.Vaults)
		l.Vaults = slices.DeleteFunc(l.Vaults, func(v listedVault) bool { return v.Path == dir })
		return len(l.Vaults) != n
	})
}

// retireOptions are coffer key retire's flags.
type retireOptions struct {
	dryRun    bool
	allListed bool     // the user confirms the list knows every vault
	forget    []string // listed vault directories gone for good
	rewrap    bool     // rewrap vaults still under an older version first
}

// retireReport is what coffer key retire found and did (its --json).
type retireReport struct {
	KeyFile   string           `json:"key_file"`
	KeyID     string           `json:"key_id"`
	Current   int              `json:"current"`
	DryRun    bool             `json:"dry_run"`
	Versions  []retireVersion  `json:"versions"`
	Vaults    []string         `json:"vaults"`
	Blocked   []retireBlocker  `json:"blocked"`
	Deleted   []int            `json:"deleted"`
	Rewrapped []string         `json:"rewrapped,omitempty"`
	Forgotten []string         `json:"forgotten,omitempty"`
	needed    map[int][]string // version → vaults
}

// retireVersion is one version and why it stays or goes.
type retireVersion struct {
	Version  int       `json:"version"`
	Created  time.Time `json:"created"`
	State    string    `json:"state"` // current, needed, unlisted, kept, retired, would-retire
	NeededBy []string  `json:"needed_by,omitempty"`
}

// retireBlocker is a vault that could not be read: every version stays.
type retireBlocker struct {
	Vault string `json:"vault"`
	Error string `json:"error"`
}

// retireVaultsDir lists the vault directories to ask: every listed one
// (by its listed path and ID, so that a missing or replaced one is
// noticed), and every vault under $COFFER_HOME/vaults not listed (one
// not opened since the list began).
func (a *app) retireVaultsDir(l vaultList) ([]listedVault, error) {
	home, err := a.cofferHome()
	if err != nil {
		return nil, err
	}
	out := slices.Clone(l.Vaults)
	seen := map[string]bool{}
	for _, v := range l.Vaults {
		seen[v.Path] = true
	}
	ents, err := os.ReadDir(filepath.Join(home, "vaults"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("list %s: %w", filepath.Join(home, "vaults"), err)
	}
	for _, e := range ents {
		dir := filepath.Join(home, "vaults", e.Name())
		if e.IsDir() && !seen[dir] && vaultExists(dir) {
			out = append(out, listedVault{Path: dir})
		}
	}
	return out, nil
}

// platformVersionsOf reads which versions of platform key keyID the vault
// in dir may still need, and its ID, without any key.
func platformVersionsOf(ctx context.Context, dir, keyID string) ([]int, vault.ID, error) {
	var id vault.ID
	if !vaultExists(dir) {
		if _, err := os.Stat(dir); err != nil {
			return nil, id, fmt.Errorf("no vault at %s (%v)", dir, err)
		}
		return nil, id, fmt.Errorf("no vault at %s any more", dir)
	}
	st, err := local.Open(storePath(dir))
	if err != nil {
		return nil, id, err
	}
	defer st.Close()
	var cat vault.Catalog
	if _, err := os.Stat(catalogPath(dir)); err == nil {
		c, err := sqlite.Open(catalogPath(dir))
		if err != nil {
			return nil, id, err
		}
		defer c.Close()
		rec, err := c.Vault(ctx, localCatalogName)
		switch {
		case err == nil:
			id, cat = rec.ID, c
		case !errors.Is(err, vault.ErrNotFound):
			return nil, id, err
		}
	}
	if cat == nil { // no catalog (yet): the store names the vault, every generation counts
		cfg, _, err := engine.Inspect(ctx, st)
		if err != nil {
			return nil, id, err
		}
		if id, err = vault.ParseID(cfg.ID); err != nil {
			return nil, id, err
		}
	}
	refs, err := engine.KEKsInUse(ctx, st, cat, id)
	if err != nil {
		return nil, id, err
	}
	var out []int
	for _, r := range refs {
		if r.Provider != platform.Provider || r.KeyID != keyID {
			continue // a customer key or another key file: not this one's
		}
		v, err := strconv.Atoi(r.Version)
		if err != nil {
			return nil, id, fmt.Errorf("%w: the keyring names platform key version %q", vault.ErrCorrupt, r.Version)
		}
		out = append(out, v)
	}
	sort.Ints(out)
	return out, id, nil
}

// retirePlatform deletes from the platform key file every version that
// no vault needs (docs/keys.md, "Retiring platform key versions"):
// SECURITY: a version stays while any vault under $COFFER_HOME/vaults or
// in the list beside the key file still names it in its current keyring
// (engine.KEKsInUse), while any such vault cannot be read (then every
// version stays), and while it is older than the list itself (a vault
// never listed may need it) unless opt.allListed. The current version
// always stays.
func (a *app) retirePlatform(ctx context.Context, keyFile string, opt retireOptions) (retireReport, error) {
	rep := retireReport{KeyFile: keyFile, DryRun: opt.dryRun, Vaults: []string{}, Blocked: []retireBlocker{}, Deleted: []int{}, needed: map[int][]string{}}
	ks, err := platform.Open(keyFile)
	if err != nil {
		return rep, err
	}
	rep.KeyID = ks.ID()
	rep.Current, _ = strconv.Atoi(ks.Current().Version)
	l, exists, lerr := loadVaultList(keyFile)
	if lerr != nil {
		rep.Blocked = append(rep.Blocked, retireBlocker{Vault: vaultListPath(keyFile), Error: lerr.Error()})
	}
	if !exists {
		// Made before coffer listed vaults: every version so far may wrap
		// one it never saw.
		l = vaultList{Kind: vaultListKind, Fmt: 1, KeyID: ks.ID(), UnlistedUpTo: rep.Current, Vaults: []listedVault{}}
	}
	var forget []string
	for _, f := range opt.forget {
		abs, err := filepath.Abs(f)
		if err != nil {
			return rep, err
		}
		if !slices.ContainsFunc(l.Vaults, func(v listedVault) bool { return v.Path == abs }) {
			return rep, fmt.Errorf("--forget %s: no vault is listed there (see coffer key retire --dry-run)", abs)
		}
		forget = append(forget, abs)
	}
	// SECURITY: --forget DIR drops what was listed at DIR but is not
	// there any more; a vault that is there now stays listed.
	gone := func(v listedVault) bool {
		if !slices.Contains(forget, v.Path) {
			return false
		}
		_, id, err := platformVersionsOf(ctx, v.Path, ks.ID())
		return err != nil || id.String() != v.ID
	}
	l.Vaults = slices.DeleteFunc(l.Vaults, func(v listedVault) bool {
		if gone(v) {
			rep.Forgotten = append(rep.Forgotten, v.Path+" (vault "+v.ID+")")
			return true
		}
		return false
	})
	vaults, err := a.retireVaultsDir(l)
	if err != nil {
		return rep, err
	}
	for _, lv := range vaults {
		need, id, err := platformVersionsOf(ctx, lv.Path, ks.ID())
		if err == nil && lv.ID != "" && id.String() != lv.ID {
			err = fmt.Errorf("it holds vault %s, but vault %s was listed there: if that vault moved, open it once where it is now (coffer snapshots --vault DIR)", id, lv.ID)
		}
		if err == nil && opt.rewrap && !opt.dryRun && slices.ContainsFunc(need, func(v int) bool { return v != rep.Current }) {
			if err = a.rewrapPlatform(ctx, lv.Path); err == nil {
				rep.Rewrapped = append(rep.Rewrapped, lv.Path)
				need, _, err = platformVersionsOf(ctx, lv.Path, ks.ID())
			}
		}
		if err != nil {
			msg := err.Error()
			switch {
			case lv.ID != "":
				msg += "; if it is gone for good, run coffer key retire --forget " + lv.Path
			case slices.ContainsFunc(l.Vaults, func(v listedVault) bool { return v.Path == lv.Path }):
				// SECURITY: a pending entry (listPendingVault) with no
				// readable vault: one is being created there, or its
				// creation was cut short; every version stays until a
				// vault is there or the user drops the entry.
				msg += " (listed when a vault was being created there: its creation is under way or was cut short); if no vault will be made there, run coffer key retire --forget " + lv.Path
			}
			rep.Blocked = append(rep.Blocked, retireBlocker{Vault: lv.Path, Error: msg})
			continue
		}
		rep.Vaults = append(rep.Vaults, lv.Path)
		for _, v := range need {
			rep.needed[v] = append(rep.needed[v], lv.Path)
		}
	}
	var drop []int
	for _, v := range ks.Versions() {
		rv := retireVersion{Version: v.Version, Created: v.Created, NeededBy: rep.needed[v.Version]}
		switch {
		case v.Version == rep.Current:
			rv.State = "current"
		case len(rv.NeededBy) > 0:
			rv.State = "needed"
		case v.Version <= l.UnlistedUpTo && !opt.allListed:
			rv.State = "unlisted"
		case len(rep.Blocked) > 0:
			rv.State = "kept"
		case opt.dryRun:
			rv.State = "would-retire"
		default:
			rv.State = "retired"
			drop = append(drop, v.Version)
		}
		rep.Versions = append(rep.Versions, rv)
	}
	if opt.dryRun || len(rep.Blocked) > 0 {
		return rep, nil
	}
	// The list first: a confirmation or a forgotten vault is recorded
	// even if the deletion then fails.
	if !exists || opt.allListed || len(forget) > 0 {
		if err := updateVaultList(keyFile, ks, false, func(cur *vaultList) bool {
			if opt.allListed {
				cur.UnlistedUpTo = 0
			}
			cur.Vaults = slices.DeleteFunc(cur.Vaults, gone)
			return true
		}); err != nil {
			return rep, err
		}
	}
	// SECURITY: under the key file's lock, the list must still be the one
	// decided on: a vault listed since (one being created, listed before
	// its keys are wrapped) may need what would be deleted.
	decided := slices.Clone(l.Vaults)
	if rep.Deleted, err = ks.RetireChecked(drop, func() error {
		cur, _, err := loadVaultList(keyFile)
		if err != nil {
			return err
		}
		for _, v := range cur.Vaults {
			if !slices.ContainsFunc(decided, func(d listedVault) bool { return d.Path == v.Path && d.ID == v.ID }) {
				return fmt.Errorf("vault %s was listed beside the key file meanwhile (being created?): nothing deleted; run coffer key retire again", v.Path)
			}
		}
		return nil
	}); err != nil {
		return rep, err
	}
	if rep.Deleted == nil {
		rep.Deleted = []int{}
	}
	for i := range rep.Versions {
		if rep.Versions[i].State == "retired" && !slices.Contains(rep.Deleted, rep.Versions[i].Version) {
			rep.Versions[i].State = "kept" // became current meanwhile (another process rotated)
		}
	}
	return rep, nil
}

// rewrapPlatform opens the vault in dir and rewraps its keys under the
// platform key's current version.
func (a *app) rewrapPlatform(ctx context.Context, dir string) error {
	saved := a.vaultRef
	a.vaultRef = dir
	defer func() { a.vaultRef = saved }()
	o, err := a.openVault(ctx, false)
	if err != nil {
		return err
	}
	defer o.Close()
	if o.keys == nil {
		return nil // a customer key now: nothing of the platform key's
	}
	kek := o.KeyInfo().KEK
	if kek == o.keys.Current() {
		return nil
	}
	if err := o.Rewrap(ctx, o.keys); err != nil {
		a.keyEvent(ctx, o, vault.KeyEventKEKRotate, kek.String(), "rewrap under the current platform key failed: "+err.Error(), false)
		return fmt.Errorf("rewrap under the current platform key: %w", err)
	}
	a.keyEvent(ctx, o, vault.KeyEventKEKRotate, o.keys.Current().String(), "vault keys rewrapped from "+kek.String()+" (coffer key retire)", true)
	return nil
}

// autoRetire retires what it can after a platform key rotation or a
// switch to a customer key, and says on stderr what it did or what keeps
// a version; it never fails the command that called it.
func (a *app) autoRetire(ctx context.Context, keyFile string) {
	rep, err := a.retirePlatform(ctx, keyFile, retireOptions{})
	if err != nil {
		fmt.Fprintf(a.stderr, "warning: older platform key versions not retired: %v\n", err)
		return
	}
	if len(rep.Deleted) > 0 {
		fmt.Fprintf(a.stderr, "platform key versions retired (no vault needs them any more): %s\n", versionList(rep.Deleted))
	}
	for _, b := range rep.Blocked {
		fmt.Fprintf(a.stderr, "warning: every platform key version kept: vault %s could not be read: %s\n", safeText(b.Vault), safeText(b.Error))
	}
	var unlisted []int
	for _, v := range rep.Versions {
		if v.State == "unlisted" {
			unlisted = append(unlisted, v.Version)
		}
	}
	if len(unlisted) > 0 && len(rep.Blocked) == 0 {
		fmt.Fprintf(a.stderr, "note: platform key %s kept: it predates this machine's list of vaults, so a vault never listed may need it; see coffer key retire --help\n", versionList(unlisted))
	}
}

func versionList(vs []int) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = "v" + strconv.Itoa(v)
	}
	return strings.Join(s, ", ")
}
