package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/vault"
)

func newVaultCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vault",
		Short: "Show and manage vaults",
	}
	cmd.AddCommand(newVaultShowCmd(a))
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
			v, err := a.openVault(ctx, false)
			if err != nil {
				return err
			}
			defer v.Close()
			snaps, err := v.Snapshots(ctx)
			if err != nil {
				return err
			}
			var packs int
			var size int64
			if err := v.catalog.Packs(ctx, v.Record().ID, func(p vault.PackRecord) error {
				packs++
				size += p.Size
				return nil
			}); err != nil {
				return err
			}
			ki := v.KeyInfo()
			now := a.now()
			if jsonOut {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{
					"name": v.loc.name, "id": v.Record().ID.String(), "path": v.loc.dir, "created": v.Config().Created,
					"snapshots": len(snaps), "packs": packs, "stored_bytes": size,
					"encryption": map[string]any{
						"algorithm": ki.Algorithm, "key_source": ki.KeySource, "kek": ki.KEK.String(),
						"kek_provider": ki.KEK.Provider, "kek_id": ki.KEK.KeyID, "kek_version": ki.KEK.Version,
						"key_file": v.keys.Path(), "wrap_algorithm": ki.WrapAlg, "dek_version": ki.DEKVersion,
						"deks": ki.DEKCount, "created": ki.Created, "last_rotated": ki.LastRotated,
						"keyring_generation": ki.KeyringGen, "key_reachable": true,
					},
				})
			}
			fmt.Fprintf(a.stdout, "Vault %s (%s)\n", v.loc.name, v.Record().ID.Short())
			fmt.Fprintf(a.stdout, "  location:      %s\n", v.loc.dir)
			fmt.Fprintf(a.stdout, "  created:       %s\n", v.Config().Created.Local().Format(time.RFC3339))
			fmt.Fprintf(a.stdout, "  snapshots:     %d\n", len(snaps))
			fmt.Fprintf(a.stdout, "  stored:        %s in %d packs\n", humanBytes(uint64(size)), packs)
			fmt.Fprintf(a.stdout, "Backup Encryption\n")
			fmt.Fprintf(a.stdout, "  algorithm:     %s (every pack, tree and snapshot)\n", ki.Algorithm)
			fmt.Fprintf(a.stdout, "  key source:    %s\n", ki.KeySource)
			fmt.Fprintf(a.stdout, "  key (KEK):     %s, wraps with %s\n", ki.KEK, ki.WrapAlg)
			fmt.Fprintf(a.stdout, "  key file:      %s\n", v.keys.Path())
			fmt.Fprintf(a.stdout, "  key reachable: yes\n")
			fmt.Fprintf(a.stdout, "  data key:      DEK v%d (%d in keyring)\n", ki.DEKVersion, ki.DEKCount)
			fmt.Fprintf(a.stdout, "  created:       %s\n", ki.Created.Local().Format(time.RFC3339))
			fmt.Fprintf(a.stdout, "  last rotated:  %s (%s)\n", ki.LastRotated.Local().Format(time.RFC3339), ago(now, ki.LastRotated))
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}
