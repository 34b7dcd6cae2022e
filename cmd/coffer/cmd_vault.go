package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/protect"
	"github.com/coffer-backup/coffer/internal/vault"
)

func newVaultCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vault",
		Short: "Show and manage vaults",
	}
	cmd.AddCommand(newVaultShowCmd(a), newVaultCreateCmd(a), newVaultSetCmd(a), newVaultLogCmd(a), newVaultDeleteCmd(a), newVaultAcceptRollbackCmd(a), newVaultRecoverCmd(a))
	return cmd
}

func ago(now, t time.Time) string {
	d := now.Sub(t)
	plural := func(n int, unit string) string {
		if n == 1 {
			return "1 " + unit + " ago"
		}
		return fmt.Sprintf("%d %ss ago", n, unit)
	}
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return plural(int(d.Minutes()), "minute")
	case d < 48*time.Hour:
		return plural(int(d.Hours()), "hour")
	}
	return plural(int(d.Hours()/24), "day")
}

func newVaultShowCmd(a *app) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Show a vault and what protects it",
		Long: `Show a vault: where it lives, its snapshots and size, and its Backup
Encryption: the algorithm, the key source, the key encryption key and its key
file, the data key (DEK) version and when it was created and last rotated.`,
		Example: "  coffer vault show\n  coffer vault show --vault /mnt/usb/vault --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var vi vaultInfo
			var keyErr error // the vault is described, then this ends the command
			v, err := a.open(ctx, false)
			switch {
			case err == nil:
				defer v.Close()
				if vi, err = v.Info(ctx); err != nil {
					return err
				}
				if vi.KeyError != "" { // a server describes a vault whose key it cannot use
					keyErr = fmt.Errorf("%w: %s", vault.ErrKeyUnavailable, vi.KeyError)
				}
			case !isRemote(a.vaultRef) && (errors.Is(err, vault.ErrKeyUnavailable) || errors.Is(err, vault.ErrWrongKey)):
				// Say what the vault is and that its key is out of reach,
				// rather than only failing.
				keyErr = err
				if vi, err = a.inspectLocal(ctx, err); err != nil {
					return err
				}
			default:
				return err
			}
			// Deletion protection (needs the vault open, so not with its
			// key out of reach).
			var prot *vault.VaultSettings
			if p, ok := v.(protection); ok && keyErr == nil {
				if st, serr := p.settings(ctx); serr == nil {
					prot = &st
				} else {
					// Settings that do not verify (docs/format.md §8.4) are
					// not shown as if they were the vault's.
					fmt.Fprintf(a.stderr, "warning: deletion protection not shown: %v\n", serr)
				}
			} else if keyErr != nil && !isRemote(a.vaultRef) {
				// Plaintext in the catalog: shown with the key out of
				// reach too, for whether the vault is single-user says
				// what can be done about it.
				if loc, lerr := a.locate(); lerr == nil {
					if st, serr := localSettings(ctx, loc.dir); serr == nil {
						prot = &st
						fmt.Fprintln(a.stderr, "warning: deletion protection as the catalog holds it, unverified without the vault's key")
					}
				}
			}
			kek := vault.KeyRef{Provider: vi.KEKProvider, KeyID: vi.KEKID, Version: vi.KEKVersion}
			now := a.now()
			if jsonOut {
				enc := json.NewEncoder(a.jsonStdout)
				enc.SetIndent("", "  ")
				encryption := map[string]any{
					"algorithm": vi.Algorithm, "key_source": vi.KeySource, "kek": kek.String(),
					"kek_provider": vi.KEKProvider, "kek_id": vi.KEKID, "kek_version": vi.KEKVersion,
					"wrap_algorithm": vi.WrapAlg, "dek_version": vi.DEKVersion,
					"deks": vi.DEKCount, "created": vi.Created, "last_rotated": vi.LastRotated,
					"keyring_generation": vi.KeyringGen, "key_reachable": vi.KeyError == "",
				}
				if vi.KeyFile != "" {
					encryption["key_file"] = vi.KeyFile
				}
				if vi.KeyError != "" {
					encryption["key_error"] = vi.KeyError
				}
				out := map[string]any{
					"name": vi.Name, "id": vi.ID, "path": vi.Location, "created": vi.Created,
					"snapshots": vi.Snapshots, "packs": vi.Packs, "stored_bytes": vi.StoredBytes,
					"encryption": encryption,
				}
				if prot != nil {
					pm := settingsJSON(*prot)
					pm["store_enforces_retention"] = false
					out["protection"] = pm
				}
				if err := enc.Encode(out); err != nil {
					return err
				}
				return keyErr
			}
			id := vi.ID
			if len(id) > 8 {
				id = id[:8]
			}
			fmt.Fprintf(a.stdout, "Vault %s (%s)\n", vi.Name, id)
			fmt.Fprintf(a.stdout, "  location:      %s\n", vi.Location)
			fmt.Fprintf(a.stdout, "  created:       %s\n", vi.Created.Local().Format(time.RFC3339))
			fmt.Fprintf(a.stdout, "  snapshots:     %d\n", vi.Snapshots)
			fmt.Fprintf(a.stdout, "  stored:        %s in %d packs\n", humanBytes(uint64(vi.StoredBytes)), vi.Packs)
			fmt.Fprintf(a.stdout, "Backup Encryption\n")
			fmt.Fprintf(a.stdout, "  algorithm:     %s (every pack, tree and snapshot)\n", vi.Algorithm)
			fmt.Fprintf(a.stdout, "  key source:    %s\n", vi.KeySource)
			fmt.Fprintf(a.stdout, "  key (KEK):     %s, wraps with %s\n", kek, vi.WrapAlg)
			if vi.KeyFile != "" {
				fmt.Fprintf(a.stdout, "  key file:      %s\n", vi.KeyFile)
			}
			if vi.KeyError == "" {
				fmt.Fprintf(a.stdout, "  key reachable: yes\n")
			} else {
				fmt.Fprintf(a.stdout, "  key reachable: NO: %s\n", safeText(vi.KeyError))
			}
			fmt.Fprintf(a.stdout, "  data key:      DEK v%d (%d in keyring)\n", vi.DEKVersion, vi.DEKCount)
			fmt.Fprintf(a.stdout, "  created:       %s\n", vi.Created.Local().Format(time.RFC3339))
			fmt.Fprintf(a.stdout, "  last rotated:  %s (%s)\n", vi.LastRotated.Local().Format(time.RFC3339), ago(now, vi.LastRotated))
			if prot != nil {
				printProtection(a, *prot, isRemote(a.vaultRef))
			}
			return keyErr
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

// printProtection prints the Deletion Protection section of vault show.
func printProtection(a *app, s vault.VaultSettings, remote bool) {
	fmt.Fprintf(a.stdout, "Deletion Protection\n")
	switch s.SoftDelete {
	case vault.SoftDeleteOff:
		fmt.Fprintf(a.stdout, "  soft delete:   off (forgotten snapshots may be pruned at once)\n")
	default:
		fmt.Fprintf(a.stdout, "  soft delete:   %s, %d days\n", s.SoftDelete, s.SoftDeleteDays)
	}
	fmt.Fprintf(a.stdout, "  immutability:  %s\n", s.Immutability)
	if s.MinRetention > 0 {
		fmt.Fprintf(a.stdout, "  min retention: %s\n", protect.FormatDuration(s.MinRetention))
	} else {
		fmt.Fprintf(a.stdout, "  min retention: none\n")
	}
	if p, err := protect.ParsePolicy(s.Policy); err == nil && s.Policy != "" {
		fmt.Fprintf(a.stdout, "  policy:        %s\n", p)
	} else {
		fmt.Fprintf(a.stdout, "  policy:        none (snapshots are kept until forgotten)\n")
	}
	switch {
	case s.SingleUser:
		fmt.Fprintf(a.stdout, "  single-user:   yes (critical changes with --confirm)\n")
	case remote:
		fmt.Fprintf(a.stdout, "  single-user:   no (critical changes wait for a security approver)\n")
	default:
		fmt.Fprintf(a.stdout, "  single-user:   no (critical changes are refused: no second person can approve them here)\n")
	}
	if s.DedupScope.OrDefault() == vault.DedupScopeSource {
		fmt.Fprintf(a.stdout, "  dedup scope:   source (each source deduplicates, lists and reads only its own backups)\n")
	} else {
		fmt.Fprintf(a.stdout, "  dedup scope:   vault (every source's agent can probe and read the whole vault)\n")
	}
	fmt.Fprintf(a.stdout, "  enforced by:   coffer (this store has no object retention of its own)\n")
}
