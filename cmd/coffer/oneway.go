package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
	"github.com/coffer-backup/coffer/internal/protect"
	"github.com/coffer-backup/coffer/internal/vault"
)

// A local vault made by a first backup belongs to the one person who ran
// it: it is single-user, so that protection and key changes made on it can
// be walked back (critical ones with --confirm). `coffer vault create`
// without --single-user keeps a vault that is not: on it, whatever
// strengthens protection (or moves to a customer-managed key) can never be
// undone, because undoing it needs a second person a local vault does not
// have. Every change that cannot be undone, on any vault, is announced and
// needs a yes on a terminal or --confirm: oneWay says which those are.

// singleUserDetail is the event recorded when a vault becomes single-user.
const (
	singleUserExplicit = "created single-user: critical changes allowed with --confirm"
	singleUserImplicit = "created by a first backup, single-user: critical changes allowed with --confirm"
)

// setSingleUser makes the just-created vault o single-user, and records it.
func (a *app) setSingleUser(ctx context.Context, o *openedVault, detail string) error {
	s, err := o.Settings(ctx)
	if err != nil {
		return err
	}
	if s.SingleUser {
		return nil // another process creating it at the same moment did it
	}
	s.SingleUser = true
	s.Updated = a.now().UTC()
	if err := o.InitSettings(ctx, s, a.principal()); err != nil {
		return err
	}
	return o.catalog.AddEvent(ctx, vault.VaultEvent{Vault: o.Record().ID, Time: a.now().UTC(), Principal: a.principal(),
		Event: vault.EventSettings, Detail: detail, OK: true})
}

// oneWay says why the settings change cur → next could never be undone,
// or "" when it could. localMultiUser: a local vault that is not
// single-user, which cannot make critical changes at all.
func oneWay(cur, next vault.VaultSettings, localMultiUser bool) string {
	if next.Immutability == vault.ImmutabilityLocked {
		next = protect.Lock(next)
	}
	if _, err := protect.Settings(cur, next); err != nil {
		return "" // refused anyway, by the change itself
	}
	switch {
	case next.Immutability == vault.ImmutabilityLocked && cur.Immutability != vault.ImmutabilityLocked:
		return "locked immutability can never be unlocked, on any vault, and it makes soft delete always-on"
	case next.SoftDelete == vault.SoftDeleteAlwaysOn && cur.SoftDelete != vault.SoftDeleteAlwaysOn:
		return "always-on soft delete can never be turned off, on any vault"
	}
	if !localMultiUser {
		return "" // single-user: with --confirm; a server: with approval
	}
	back, err := protect.Settings(next, cur)
	switch {
	case err != nil:
		return fmt.Sprintf("going back would be refused (%v)", err)
	case back.NeedsApproval():
		return fmt.Sprintf("going back (%s) is a critical change, which needs a second person's approval, and this local vault has one principal and is not single-user", strings.Join(back.Critical, "; "))
	}
	return ""
}

// useCMKOneWay: on a local vault that is not single-user, coffer key
// use-pmk is refused, so a customer-managed key is for good.
const useCMKOneWay = "going back to the platform key (coffer key use-pmk) is a critical change, which needs a second person's approval, and this local vault has one principal and is not single-user; if the customer-managed key is ever lost, so are the backups"

// confirmOneWay lets a change that cannot be undone (what, why) go ahead:
// with --confirm, or on a terminal when the person says yes; otherwise it
// refuses, and nothing changes.
func (a *app) confirmOneWay(what, why string, confirm bool) error {
	if confirm {
		fmt.Fprintf(a.stderr, "note: %s cannot be undone: %s\n", what, why)
		return nil
	}
	if a.interactive() {
		fmt.Fprintf(a.stderr, "warning: %s cannot be undone: %s\nMake this change? [y/N] ", what, why)
		if ans := strings.ToLower(strings.TrimSpace(readLine(a.stdin, 64))); ans == "y" || ans == "yes" {
			return nil
		}
		return errors.New("nothing changed")
	}
	return fmt.Errorf("%s cannot be undone: %s. Nothing changed: add --confirm to make it anyway", what, why)
}

// interactive reports whether a person is at a terminal to answer: stdin
// and stderr are both terminals.
func (a *app) interactive() bool {
	in, ok := a.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(in.Fd())) {
		return false
	}
	errf, ok := a.rawStderr.(*os.File)
	return ok && term.IsTerminal(int(errf.Fd()))
}

// readLine reads one line of at most max bytes from r, a byte at a time so
// that nothing after it is consumed.
func readLine(r io.Reader, max int) string {
	var b []byte
	one := make([]byte, 1)
	for len(b) < max {
		n, err := r.Read(one)
		if n == 1 {
			if one[0] == '\n' {
				break
			}
			b = append(b, one[0])
		}
		if err != nil {
			break
		}
	}
	return string(b)
}

// keyAdvice is what to add to a key-unavailable error of a local vault
// wrapped by a customer-managed key: the way back to the platform key, and
// only when this vault takes it (a vault that is not single-user refuses
// coffer key use-pmk).
func keyAdvice(ctx context.Context, dir string) string {
	s, err := localSettings(ctx, dir)
	if err != nil || !s.SingleUser {
		return ""
	}
	return "; once the key is back, `coffer key use-pmk --confirm` switches this single-user vault back to the platform key"
}

// localSettings reads the protection settings of the local vault at dir
// from its catalog, without its keys.
func localSettings(ctx context.Context, dir string) (vault.VaultSettings, error) {
	cat, err := sqlite.Open(catalogPath(dir))
	if err != nil {
		return vault.VaultSettings{}, err
	}
	defer cat.Close()
	rec, err := cat.Vault(ctx, localCatalogName)
	if err != nil {
		return vault.VaultSettings{}, err
	}
	return cat.Settings(ctx, rec.ID)
}
