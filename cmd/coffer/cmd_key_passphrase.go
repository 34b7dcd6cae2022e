package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/keys/passphrase"
	"github.com/coffer-backup/coffer/internal/keys/platform"
	"github.com/coffer-backup/coffer/internal/protect"
	"github.com/coffer-backup/coffer/internal/vault"
)

const passphraseLocalOnly = "passphrases are for local vaults: a vault server runs unattended, with no one to type one; use a customer-managed key there (coffer key use-cmk)"

// useKeyPassphrase is `coffer key use-cmk passphrase:`: the vault's keys
// are rewrapped to a new passphrase slot set, with the protections of any
// other switch of keys (use-cmk).
func (a *app) useKeyPassphrase(ctx context.Context, confirm bool) error {
	if isRemote(a.vaultRef) {
		return errors.New(passphraseLocalOnly)
	}
	v, err := a.openVault(ctx, false)
	if err != nil {
		return err
	}
	defer v.Close()
	before := v.KeyInfo().KEK
	if before.Provider == passphrase.Name {
		return errors.New("the vault's keys are wrapped by passphrases already: add one with coffer key add --passphrase, remove one with coffer key remove SLOT")
	}
	settings, err := v.Settings(ctx)
	if err != nil {
		return err
	}
	how := ""
	if c := protect.UseCMK(settings); c.NeedsApproval() {
		critical := strings.Join(c.Critical, "; ")
		switch {
		case !settings.SingleUser:
			err = fmt.Errorf("%w: %s needs a second person's approval, and a local vault has one principal; only a vault created with `coffer vault create --single-user` allows it here (with --confirm)", vault.ErrApprovalRequired, critical)
		case !confirm:
			err = fmt.Errorf("%w: %s is a critical change: add --confirm to make it on this single-user vault (it is recorded)", vault.ErrApprovalRequired, critical)
		}
		if err != nil {
			a.keyEvent(ctx, v, vault.KeyEventUseCMK, passphrase.Name, "refused: "+err.Error(), false)
			return err
		}
		how = ", critical, confirmed on a single-user vault"
	}
	if !settings.SingleUser {
		if err := a.confirmOneWay("switching to passphrases", useCMKOneWay, confirm); err != nil {
			return err
		}
	}
	to, err := a.createPassphraseProvider(ctx, v.loc.name)
	if err != nil {
		return err
	}
	if err := v.Rewrap(ctx, to); err != nil {
		a.keyEvent(ctx, v, vault.KeyEventUseCMK, to.Current().String(), "switch from "+before.String()+" failed: "+err.Error(), false)
		return err
	}
	a.keyEvent(ctx, v, vault.KeyEventUseCMK, to.Current().String(), "keys rewrapped from "+before.String()+" (passphrase"+how+")", true)
	ki := v.KeyInfo()
	fmt.Fprintf(a.stdout, "keys rewrapped: %s → %s (keyring generation %d, %d DEKs); nothing was re-encrypted\n", before, ki.KEK, ki.KeyringGen, ki.DEKCount)
	if before.Provider == platform.Provider {
		a.autoRetire(ctx, v.loc.keyFile)
	}
	return nil
}

// openPassphraseVault opens a local vault wrapped by passphrases, with its
// provider.
func (a *app) openPassphraseVault(ctx context.Context) (*openedVault, *passphrase.Provider, error) {
	if isRemote(a.vaultRef) {
		return nil, nil, errors.New(passphraseLocalOnly)
	}
	v, err := a.openVault(ctx, false)
	if err != nil {
		return nil, nil, err
	}
	p, ok := v.provider.(*passphrase.Provider)
	if !ok {
		v.Close()
		return nil, nil, fmt.Errorf("the vault's keys are wrapped by %s, not by passphrases: switch with coffer key use-cmk passphrase:", v.KeyInfo().KEK)
	}
	return v, p, nil
}

// rewrapSlots moves the vault to the slot set of to (one slot more or
// less): a rewrap with a fresh DEK, so a removed passphrase opens nothing
// written from now on.
func (a *app) rewrapSlots(ctx context.Context, v *openedVault, from, to *passphrase.Provider, what string) error {
	if err := v.Rewrap(ctx, to); err != nil {
		a.keyEvent(ctx, v, vault.KeyEventKEKRotate, to.Current().String(), what+" failed: "+err.Error(), false)
		return err
	}
	a.keyEvent(ctx, v, vault.KeyEventKEKRotate, to.Current().String(), what+"; keys rewrapped from "+from.Current().String(), true)
	ki := v.KeyInfo()
	fmt.Fprintf(a.stdout, "%s; keys rewrapped (keyring generation %d, %d DEKs, %d passphrases); nothing was re-encrypted\n", what, ki.KeyringGen, ki.DEKCount, len(to.Slots()))
	return nil
}

func newKeyAddCmd(a *app) *cobra.Command {
	var pass bool
	cmd := &cobra.Command{
		Use:   "add [VAULT] --passphrase",
		Short: "Add a passphrase that opens the vault",
		Long: `Add a passphrase to a local vault whose keys passphrases wrap (coffer vault
create --key passphrase:, or coffer key use-cmk passphrase:). The vault is
opened with a passphrase it has ($COFFER_PASSWORD_FILE, $COFFER_PASSWORD_COMMAND
or typed), and the new one is read from $COFFER_NEW_PASSWORD_FILE or
$COFFER_NEW_PASSWORD_COMMAND, else typed twice; never from the command line.
Any one of the vault's passphrases (at most 16) opens it. The keys are
rewrapped, nothing stored is re-encrypted.`,
		Example: `  coffer key add --passphrase
  COFFER_PASSWORD_FILE=~/.coffer-pw COFFER_NEW_PASSWORD_FILE=/media/usb/recovery-pw coffer key add laptop --passphrase`,
		Args: cobra.RangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !pass {
				return errors.New("say what to add: --passphrase (the only kind of key a vault holds several of)")
			}
			if _, err := a.vaultArg(args, 0); err != nil {
				return err
			}
			ctx := cmd.Context()
			v, p, err := a.openPassphraseVault(ctx)
			if err != nil {
				return err
			}
			defer v.Close()
			pw, source, err := a.newPassphrase(ctx, "the new passphrase of "+v.loc.name, false)
			if err != nil {
				return err
			}
			defer pw.Wipe()
			to, err := p.WithSlot(pw)
			if err != nil {
				return err
			}
			slots := to.Slots()
			return a.rewrapSlots(ctx, v, p, to, fmt.Sprintf("passphrase slot %s added (from %s)", slots[len(slots)-1].ID, source))
		},
	}
	cmd.Flags().BoolVar(&pass, "passphrase", false, "add a passphrase")
	return cmd
}

func newKeyRemoveCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "remove [VAULT] SLOT",
		Short: "Remove a passphrase from the vault",
		Long: `Remove a passphrase slot (its ID or at least 4 hex digits of it, from coffer key
slots) from a local vault that passphrases wrap. Run it with another of the
vault's passphrases: the slot the given passphrase opens, and the last slot,
cannot be removed. The keys are rewrapped to the remaining slots with a fresh
data key, so the removed passphrase opens nothing written from now on, even
with a copy of the vault taken before (what was written before stays readable
to whoever kept such a copy and the passphrase).`,
		Example: `  coffer key slots
  COFFER_PASSWORD_FILE=~/.coffer-pw coffer key remove 3f2a9c1b`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			rest, err := a.vaultArg(args, 1)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			v, p, err := a.openPassphraseVault(ctx)
			if err != nil {
				return err
			}
			defer v.Close()
			to, err := p.WithoutSlot(strings.ToLower(rest[0]))
			if err != nil {
				return err
			}
			var gone string
			for _, s := range p.Slots() {
				if !strings.Contains(to.Current().KeyID, s.ID) {
					gone = s.ID
				}
			}
			return a.rewrapSlots(ctx, v, p, to, "passphrase slot "+gone+" removed")
		},
	}
	return cmd
}

func newKeySlotsCmd(a *app) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "slots [VAULT]",
		Short: "List the passphrase slots of the vault",
		Long: `List the passphrase slots of a local vault that passphrases wrap: each slot's
ID, its key derivation parameters, and which one the given passphrase opens.`,
		Example: `  coffer key slots
  coffer key slots laptop --json`,
		Args: cobra.RangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := a.vaultArg(args, 0); err != nil {
				return err
			}
			v, p, err := a.openPassphraseVault(cmd.Context())
			if err != nil {
				return err
			}
			defer v.Close()
			if jsonOut {
				type slotJSON struct {
					ID        string `json:"id"`
					KDF       string `json:"kdf"`
					Time      uint32 `json:"time"`
					MemoryKiB uint32 `json:"memory_kib"`
					Threads   uint8  `json:"threads"`
					Unlocked  bool   `json:"unlocked"`
				}
				var out []slotJSON
				for _, s := range p.Slots() {
					out = append(out, slotJSON{s.ID, "argon2id", s.Params.Time, s.Params.MemoryKiB, s.Params.Threads, s.Unlocked})
				}
				return a.printJSON(out)
			}
			for _, s := range p.Slots() {
				mark := ""
				if s.Unlocked {
					mark = "  (opened by this passphrase)"
				}
				fmt.Fprintf(a.stdout, "%s  %s%s\n", s.ID, s.Params, mark)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}
