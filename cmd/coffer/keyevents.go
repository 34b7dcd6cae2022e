package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"

	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/vault"
)

// principal names who runs a local command, for key events: the operating
// system user and host.
func (a *app) principal() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return "local:" + name + "@" + host
}

// keyEvent records a key event of the open vault o. Recording is best
// effort: a key operation that succeeded is not undone because its record
// could not be written, but the failure is reported on stderr.
func (a *app) keyEvent(ctx context.Context, o *openedVault, event, kek, detail string, ok bool) {
	ev := vault.KeyEvent{Vault: o.Record().ID, Time: a.now().UTC(), Principal: a.principal(), Event: event, KEK: kek, Detail: detail, OK: ok}
	if err := o.catalog.AddKeyEvent(ctx, ev); err != nil {
		fmt.Fprintf(a.stderr, "warning: could not record the key event %s: %v\n", event, err)
	}
}

// keyOutcome records, after opening the selected local vault, that its key
// could not be reached (openErr) or, when it could and the last event was
// a failure, that it has recovered.
func (a *app) keyOutcome(ctx context.Context, loc location, o *openedVault, openErr error) {
	if openErr == nil {
		last, err := o.catalog.LastKeyEvent(ctx, o.Record().ID)
		if err == nil && last.Event == vault.KeyEventKeyUnavailable {
			a.keyEvent(ctx, o, vault.KeyEventKeyRecovered, o.KeyInfo().KEK.String(), "the key encryption key is reachable again", true)
		}
		return
	}
	event := vault.KeyEventKeyUnavailable
	switch {
	case errors.Is(openErr, engine.ErrKeyringRefused):
		event = vault.KeyEventKeyringRefused
	case !errors.Is(openErr, vault.ErrKeyUnavailable) && !errors.Is(openErr, vault.ErrWrongKey):
		return
	}
	if _, err := os.Stat(catalogPath(loc.dir)); err != nil {
		return // no vault here to record anything for (and Open would create a catalog)
	}
	cat, err := sqlite.Open(catalogPath(loc.dir))
	if err != nil {
		fmt.Fprintf(a.stderr, "warning: could not record the key event: %v\n", err)
		return
	}
	defer cat.Close()
	rec, err := cat.Vault(ctx, localCatalogName)
	if err != nil {
		if !errors.Is(err, vault.ErrNotFound) {
			fmt.Fprintf(a.stderr, "warning: could not record the key event: %v\n", err)
		}
		return
	}
	kek := ""
	if _, id, ref, err := a.localKEK(ctx); err == nil && id == rec.ID {
		kek = ref.String()
	}
	ev := vault.KeyEvent{Vault: rec.ID, Time: a.now().UTC(), Principal: a.principal(), Event: event,
		KEK: kek, Detail: openErr.Error(), OK: false}
	if err := cat.AddKeyEvent(ctx, ev); err != nil {
		fmt.Fprintf(a.stderr, "warning: could not record the key event: %v\n", err)
	}
}
