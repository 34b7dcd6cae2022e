package engine

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Keyring objects a store writer planted (docs/format.md §7.3, "Objects
// that do not authenticate"): anyone with the bucket's credentials can put
// an object at keys/<N+1>, and on a bucket with Object Lock keep it there.
// Such an object cannot authenticate (it would need the root secret), so
// readers skip it and writers number their generations above it.

// maxGeneration bounds the generation numbers a reader and a writer
// consider: a name above it is not a generation (a planted keys/<2^64-1>
// would otherwise leave writers no number to use).
const maxGeneration = 1 << 40

// generationOf returns the generation an object name in keys/ stands for,
// and false for a name that is not KeyringName of a generation.
func generationOf(name string) (uint64, bool) {
	g, err := strconv.ParseUint(name, 10, 64)
	if err != nil || g == 0 || g > maxGeneration || format.KeyringName(g) != name {
		return 0, false
	}
	return g, true
}

// listGenerations lists the generations in the store's keys/, ascending,
// and the names there that are not a generation's.
func listGenerations(ctx context.Context, st vault.Store) ([]uint64, []string, error) {
	var gens []uint64
	var other []string
	err := st.List(ctx, vault.KeyObject, func(oi vault.ObjectInfo) error {
		if g, ok := generationOf(oi.Handle.Name); ok {
			gens = append(gens, g)
		} else {
			other = append(other, oi.Handle.Name)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list keyrings: %w", err)
	}
	slices.Sort(gens)
	return gens, other, nil
}

// readParsed reads generation g and parses it: a read error is returned
// as err, a parse error (an object that cannot be a generation of this
// vault) as perr.
func readParsed(ctx context.Context, st vault.Store, id vault.ID, g uint64) (kr *format.Keyring, perr, err error) {
	name := format.KeyringName(g)
	kb, err := readAll(ctx, st, keyringHandle(g), 1<<20)
	if err != nil {
		return nil, nil, fmt.Errorf("read keyring generation %s: %w", name, err)
	}
	kr, perr = format.ParseKeyring(name, kb, id)
	return kr, perr, nil
}

func isProposal(props []vault.KeyProposal, kr *format.Keyring) bool {
	return slices.ContainsFunc(props, func(p vault.KeyProposal) bool {
		return p.Generation == kr.Generation && hmac.Equal(p.MAC[:], kr.MAC)
	})
}

// anchoredKeyring picks, without unwrapping anything, the generation a
// reader of an anchored vault uses (docs/format.md §7.3): the highest
// generation newer than the anchor that a key holder proposed, else the
// anchored one. The newer generations it passed over are returned:
// skipped (they cannot authenticate: they do not parse, or are format 1)
// and unproposed (parsed, format 2, not proposed: they are garbage unless
// their MAC verifies under the vault's root secret, which the caller
// checks once it holds it). gens is the store's listing, ascending.
func anchoredKeyring(ctx context.Context, st vault.Store, id vault.ID, gens []uint64, anchor vault.KeyAnchor, props []vault.KeyProposal) (kr *format.Keyring, skipped []string, unproposed []*format.Keyring, err error) {
	for i := len(gens) - 1; i >= 0 && gens[i] > anchor.Generation; i-- {
		g, perr, err := readParsed(ctx, st, id, gens[i])
		switch {
		case err != nil:
			return nil, nil, nil, err // the store failed: nothing is known
		case perr != nil:
			skipped = append(skipped, fmt.Sprintf("keys/%s: %v", format.KeyringName(gens[i]), perr))
		case g.Format != format.Format:
			skipped = append(skipped, fmt.Sprintf("keys/%s: a format-%d keyring newer than the anchored format-2 generation %d", format.KeyringName(gens[i]), g.Format, anchor.Generation))
		case isProposal(props, g):
			if kr == nil {
				kr = g
			}
		default:
			unproposed = append(unproposed, g)
		}
	}
	if kr != nil {
		return kr, skipped, unproposed, nil
	}
	if !slices.Contains(gens, anchor.Generation) {
		return nil, skipped, unproposed, errAnchoredMissing
	}
	g, perr, err := readParsed(ctx, st, id, anchor.Generation)
	if err != nil {
		return nil, nil, nil, err
	}
	if perr != nil {
		return nil, skipped, unproposed, perr
	}
	return g, skipped, unproposed, nil
}

var errAnchoredMissing = errors.New("the anchored generation is not in the store")

// authenticates reports whether kr is a format-2 generation whose MAC
// verifies under macKey (K_mac of the vault's root secret).
func authenticates(kr *format.Keyring, macKey seal.Key, id vault.ID) bool {
	return kr.Format == format.Format && kr.VerifyWith(macKey, id) == nil
}

// isGarbage reports whether the keyring object name is one the vault's
// keys did not write: it is not a generation's name, does not parse, or
// is format 2 and does not authenticate under macKey. A format-1
// generation (from before an upgrade) and an object that cannot be read
// are not known to be garbage.
func isGarbage(ctx context.Context, st vault.Store, id vault.ID, name string, macKey seal.Key) (bool, string) {
	g, ok := generationOf(name)
	if !ok {
		return true, "its name is not a keyring generation's"
	}
	kr, perr, err := readParsed(ctx, st, id, g)
	if err != nil {
		return false, ""
	}
	if perr != nil {
		return true, perr.Error()
	}
	if kr.Format == format.Format && kr.VerifyWith(macKey, id) != nil {
		return true, "its MAC does not verify under the vault's root secret"
	}
	return false, ""
}

// nextGeneration numbers the generation a key change writes after cur:
// above every generation name in the store, planted ones included (a
// planted keys/<cur+1> may be kept there by a bucket's retention, and
// creation is write-once). A generation above cur that authenticates is
// another key holder's change: ErrKeyChanged.
func (v *Vault) nextGeneration(ctx context.Context, cur uint64, macKey seal.Key) (uint64, error) {
	gens, _, err := listGenerations(ctx, v.opt.Store)
	if err != nil {
		return 0, err
	}
	next := cur + 1
	for _, g := range gens {
		if g <= cur {
			continue
		}
		kr, perr, err := readParsed(ctx, v.opt.Store, v.rec.ID, g)
		if err != nil {
			return 0, err
		}
		if perr == nil && authenticates(kr, macKey, v.rec.ID) {
			return 0, ErrKeyChanged
		}
		v.log.Warn("a keyring object that does not authenticate holds a generation number; the key change numbers its generation above it", "vault", v.opt.Name, "object", "keys/"+format.KeyringName(g))
		next = max(next, g+1)
	}
	if next > maxGeneration {
		return 0, fmt.Errorf("%w: no keyring generation number is left below %d", vault.ErrCorrupt, uint64(maxGeneration))
	}
	return next, nil
}

// keyringGarbage lists the objects in keys/ that the vault's keys did not
// write (for check): each with why.
func (v *Vault) keyringGarbage(ctx context.Context, ks *keyState) ([]string, error) {
	var names []string
	if err := v.opt.Store.List(ctx, vault.KeyObject, func(oi vault.ObjectInfo) error {
		names = append(names, oi.Handle.Name)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list keyrings: %w", err)
	}
	slices.Sort(names)
	var out []string
	for _, name := range names {
		if name == format.KeyringName(ks.keyring.Generation) {
			continue
		}
		if bad, why := isGarbage(ctx, v.opt.Store, v.rec.ID, name, ks.macKey); bad {
			out = append(out, fmt.Sprintf("keys/%s: %s", name, why))
		}
	}
	return out, nil
}
