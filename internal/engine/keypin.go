package engine

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// KeyringPin remembers the newest keyring generation a key holder on this
// machine has verified or written of a vault (docs/format.md §7.3, "The
// keyring pin"), somewhere the vault's store and catalog writers cannot
// reach. Someone who can write both (a local vault's directory) can put
// back an older generation together with the catalog's older anchor; the
// pin is what notices.
type KeyringPin interface {
	// LoadKeyring returns the pinned generation of vault; ok is false
	// when nothing is pinned yet.
	LoadKeyring(vault vault.ID) (p PinnedKeyring, ok bool, err error)
	// SaveKeyring pins p, replacing the pin (newer, or an accepted
	// rollback).
	SaveKeyring(vault vault.ID, p PinnedKeyring) error
}

// PinnedKeyring is what a KeyringPin keeps: a generation number, its MAC
// and the vault's root commitment.
type PinnedKeyring struct {
	Generation uint64
	MAC        [format.MACSize]byte
	RootCommit [format.MACSize]byte
}

func pinnedOf(kr *format.Keyring, commit [format.MACSize]byte) PinnedKeyring {
	p := PinnedKeyring{Generation: kr.Generation, RootCommit: commit}
	copy(p.MAC[:], kr.MAC)
	return p
}

// keyRollbackHint ends the refusal of a keyring older than the pin.
const keyRollbackHint = ". If you restored an older copy of this vault's directory on purpose, run coffer vault accept-rollback to accept it (it prints which generation it accepts and pins the vault's keyring as it is now); otherwise someone rolled the vault back to keys it had before: do not accept it, and restore the vault directory from a copy you trust"

// checkKeyPin compares a verified generation with the pin
// (docs/format.md §7.3): SECURITY: an older generation, the pin's
// generation with another MAC, or another root commitment at any
// generation is refused before any DEK it names is unwrapped. With
// Options.AcceptKeyringRollback an older generation (same root
// commitment) is let through and remembered for AcceptKeyringRollback.
func (v *Vault) checkKeyPin(kr *format.Keyring, commit [format.MACSize]byte) error {
	if v.opt.KeyPin == nil {
		return nil
	}
	p, ok, err := v.opt.KeyPin.LoadKeyring(v.rec.ID)
	if err != nil {
		return fmt.Errorf("keyring: read the pin of what this machine saw before: %w", err)
	}
	if !ok {
		return nil
	}
	name := format.KeyringName(kr.Generation)
	switch {
	case !hmac.Equal(p.RootCommit[:], commit[:]):
		// Not an older copy of this vault: another root secret under its
		// ID. Never accepted by accept-rollback.
		return refusedKeyring{fmt.Errorf("%w: keyring generation %s: its root secret is not the one this machine saw for this vault before (the root commitment differs): the vault's keyring was replaced by someone who can write its directory; restore the vault directory from a copy you trust", vault.ErrCorrupt, name)}
	case kr.Format != format.Format:
		// SECURITY: the pin is of a format-2 generation; a format-1
		// keyring is a copy from before the upgrade, whatever its number.
	case kr.Generation > p.Generation:
		return nil
	case kr.Generation == p.Generation && hmac.Equal(p.MAC[:], kr.MAC):
		return nil
	}
	if v.opt.AcceptKeyringRollback {
		v.keyRollback = &KeyringRollback{Pinned: p.Generation, Head: kr.Generation, Rewritten: kr.Generation >= p.Generation}
		return nil
	}
	if kr.Format != format.Format {
		return refusedKeyring{fmt.Errorf("%w: keyring generation %s is a format-1 keyring, but this machine saw format-2 generation %d of the vault's keyring before: the keyring was rolled back to a copy from before the vault's upgrade%s", vault.ErrCorrupt, name, p.Generation, keyRollbackHint)}
	}
	if kr.Generation == p.Generation {
		return refusedKeyring{fmt.Errorf("%w: keyring generation %s differs from the generation %d this machine saw before (another MAC): the keyring was rolled back or rewritten%s", vault.ErrCorrupt, name, p.Generation, keyRollbackHint)}
	}
	return refusedKeyring{fmt.Errorf("%w: keyring generation %s: this machine saw generation %d of the vault's keyring before, but the vault now holds generation %d: the keyring was rolled back (a key rotation or a key change since then is undone)%s", vault.ErrCorrupt, name, p.Generation, kr.Generation, keyRollbackHint)}
}

// advanceKeyPin pins a verified format-2 generation when it is newer than
// the pin (or nothing is pinned).
func (v *Vault) advanceKeyPin(kr *format.Keyring, commit [format.MACSize]byte) {
	if v.opt.KeyPin == nil || kr.Format != format.Format || v.keyRollback != nil {
		return
	}
	p, ok, err := v.opt.KeyPin.LoadKeyring(v.rec.ID)
	if err == nil && ok && p.Generation >= kr.Generation {
		return
	}
	if err := v.opt.KeyPin.SaveKeyring(v.rec.ID, pinnedOf(kr, commit)); err != nil {
		v.log.Warn("could not pin the keyring generation", "err", err)
	}
}

// KeyringRollback is what accepting an older keyring gives up against
// this machine's pin.
type KeyringRollback struct {
	// Pinned is the generation this machine saw before; Head the one the
	// vault holds now.
	Pinned, Head uint64
	// Rewritten: the same generation number, another generation.
	Rewritten bool
}

// Accepted reports whether there was anything to accept.
func (r KeyringRollback) Accepted() bool { return r.Rewritten || r.Head < r.Pinned }

// AcceptKeyringRollback re-pins this machine's view of the vault's keyring
// at the generation the vault holds now, after a deliberate restore of an
// older copy of its directory. The vault must have been opened with
// Options.AcceptKeyringRollback; the generation verified by itself (its
// MAC, the catalog's anchor, and the root commitment the pin recorded).
func (v *Vault) AcceptKeyringRollback(ctx context.Context) (KeyringRollback, error) {
	if v.opt.KeyPin == nil {
		return KeyringRollback{}, errors.New("this vault keeps no keyring pin on this machine: there is nothing to accept")
	}
	ks, err := v.liveKeys(ctx)
	if err != nil {
		return KeyringRollback{}, err
	}
	kr := ks.keyring
	if kr == nil || kr.Format != format.Format {
		return KeyringRollback{}, nil
	}
	if v.keyRollback == nil {
		return KeyringRollback{Head: kr.Generation, Pinned: kr.Generation}, nil
	}
	rb := *v.keyRollback
	if err := v.opt.KeyPin.SaveKeyring(v.rec.ID, pinnedOf(kr, ks.commit)); err != nil {
		return rb, fmt.Errorf("keyring: pin the accepted generation: %w", err)
	}
	v.keyRollback = nil
	return rb, nil
}
