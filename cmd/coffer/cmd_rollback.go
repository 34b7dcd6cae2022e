package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

func newVaultAcceptRollbackCmd(a *app) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "accept-rollback",
		Short: "Accept that a local vault's snapshot list or keyring is older than this machine saw",
		Long: `This machine pins the newest entry of each local vault's snapshot list it has
seen ($COFFER_HOME/chain/<vault ID>.json), and the newest generation of its
keyring ($COFFER_HOME/keyring/<vault ID>.json), so that a list or keyring
rolled back or rewritten by someone who can change the vault's directory is
noticed: listings, backups, restores and checks then refuse the vault. When you restored an older copy of
the vault on purpose (from a disk image, a file-system snapshot or a backup of
the vault directory), accept it with this command: it checks that the list
verifies by itself (only its age differs), prints how many entries this machine
saw that are gone and which keyring generation it accepts, and pins the list
and the keyring as they are now. The snapshots it lost are not recovered, and
key changes made since the copy (DEK rotations, a key switch) are undone; a
keyring with another root secret than the one pinned is never accepted. Do not run it when you did not restore the vault yourself: then
someone rolled it back; run coffer check.`,
		Example: "  coffer vault accept-rollback\n  coffer vault accept-rollback --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			a.acceptKeyRollback = true
			v, err := a.open(ctx, false)
			if err != nil {
				return err
			}
			defer v.Close()
			o, ok := v.(*openedVault)
			if !ok {
				return errors.New("accept-rollback is for a local vault (--vault DIR): a vault server keeps its own snapshot list, and no machine pins it")
			}
			// The keyring first: the snapshot list is verified with the
			// keys of the generation accepted.
			krb, err := o.AcceptKeyringRollback(ctx)
			if err != nil {
				return err
			}
			rb, err := o.AcceptRollback(ctx)
			if err != nil {
				return err
			}
			if jsonOut {
				return a.printJSON(map[string]any{"pinned": rb.Pinned, "head": rb.Head, "lost": rb.Lost(), "rewritten": rb.Rewritten, "accepted": rb.Accepted() || krb.Accepted(),
					"keyring": map[string]any{"pinned": krb.Pinned, "head": krb.Head, "rewritten": krb.Rewritten, "accepted": krb.Accepted()}})
			}
			switch {
			case krb.Rewritten:
				fmt.Fprintf(a.stdout, "accepted: the vault's keyring generation %d replaces the generation %d this machine saw, which was another one: key changes made in it are undone. Keyring now pinned at generation %d\n", krb.Head, krb.Pinned, krb.Head)
			case krb.Accepted():
				fmt.Fprintf(a.stdout, "accepted: this machine saw keyring generation %d; the vault holds generation %d: the key changes since (DEK rotations, a key switch or rewrap) are undone. Keyring now pinned at generation %d\n", krb.Pinned, krb.Head, krb.Head)
			}
			switch {
			case !rb.Accepted():
				fmt.Fprintf(a.stdout, "the vault's snapshot list (%d entries) extends what this machine saw (%d): nothing to accept\n", rb.Head, rb.Pinned)
			case rb.Rewritten:
				fmt.Fprintf(a.stdout, "accepted: the vault's snapshot list (%d entries) replaces the one this machine saw (%d entries), which it does not extend: what the old list recorded after the two diverged is lost. Now pinned at entry %d\n", rb.Head, rb.Pinned, rb.Head)
			default:
				fmt.Fprintf(a.stdout, "accepted: this machine saw %d entries of the vault's snapshot list; it now holds %d: %d entries (snapshots saved, forgotten or restored since the copy was made) are lost. Now pinned at entry %d\n", rb.Pinned, rb.Head, rb.Lost(), rb.Head)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print what was accepted as JSON")
	return cmd
}
