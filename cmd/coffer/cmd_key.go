package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

func newKeyCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Check and rotate the keys that encrypt a vault",
		Long: `The vault's data keys (DEKs) encrypt everything it stores; a key encryption
key (KEK: the platform key file, or later a customer-managed key) wraps them.
docs/keys.md explains the hierarchy. Local vaults only for now.`,
	}
	cmd.AddCommand(newKeyStatusCmd(a), newKeyRotateCmd(a))
	return cmd
}

func newKeyStatusCmd(a *app) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Probe the key encryption key: unwrap the vault's keys, wrap and unwrap a test secret",
		Example: `  coffer key status
  coffer key status --vault /mnt/usb/vault --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if isRemote(a.vaultRef) {
				return errors.New("key status works on local vaults only in this version")
			}
			ctx := cmd.Context()
			v, err := a.openVault(ctx, false)
			if err != nil {
				return err
			}
			defer v.Close()
			ki := v.KeyInfo()
			perr := v.ProbeKey(ctx)
			if jsonOut {
				out := map[string]any{"kek": ki.KEK.String(), "key_source": ki.KeySource, "wrap_algorithm": ki.WrapAlg,
					"dek_version": ki.DEKVersion, "deks": ki.DEKCount, "keyring_generation": ki.KeyringGen, "key_reachable": perr == nil}
				if perr != nil {
					out["error"] = perr.Error()
				}
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(out); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(a.stdout, "key (KEK):     %s (%s), wraps with %s\n", ki.KEK, ki.KeySource, ki.WrapAlg)
				fmt.Fprintf(a.stdout, "data key:      DEK v%d (%d in keyring generation %d)\n", ki.DEKVersion, ki.DEKCount, ki.KeyringGen)
				if perr == nil {
					fmt.Fprintf(a.stdout, "key reachable: yes (unwrapped the vault's keys; wrapped and unwrapped a test secret)\n")
				} else {
					fmt.Fprintf(a.stdout, "key reachable: no\n")
				}
			}
			if perr != nil {
				return fmt.Errorf("key check failed: %w", perr)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

func newKeyRotateCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "rotate",
		Short: "Start a new data key (DEK) for new data; old data keeps its key",
		Long: `Create a new data encryption key (DEK) and use it for everything stored from
now on. Nothing stored is re-encrypted: old packs keep the DEK they name, which
stays in the keyring, wrapped by the same key encryption key.`,
		Example: "  coffer key rotate",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if isRemote(a.vaultRef) {
				return errors.New("key rotate works on local vaults only in this version")
			}
			ctx := cmd.Context()
			v, err := a.openVault(ctx, false)
			if err != nil {
				return err
			}
			defer v.Close()
			ver, err := v.RotateDEK(ctx)
			if err != nil {
				return err
			}
			ki := v.KeyInfo()
			fmt.Fprintf(a.stdout, "new data key DEK v%d in use (keyring generation %d, %d DEKs); nothing was re-encrypted\n", ver, ki.KeyringGen, ki.DEKCount)
			return nil
		},
	}
}
