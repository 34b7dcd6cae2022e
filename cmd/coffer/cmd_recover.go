package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/api"
)

func newVaultRecoverCmd(a *app) *cobra.Command {
	var storeURL, keyURI string
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "recover NAME",
		Short: "Rebuild a vault the server's catalog lost, from its store and key alone",
		Long: `Rebuild vault NAME on a vault server whose catalog lost it (a lost or
replaced data directory) from the vault's store and its key alone. Needs an
owner token.

The server records the vault from the store's config, anchors its newest
keyring generation, catalogues every pack whose sealed header opens under
the vault's keys and enters every snapshot whose object opens in a new
snapshot list. The vault then restores, checks and backs up as before.

  --store s3://BUCKET/PREFIX[?endpoint=…&region=…]
                  the vault's own store, recorded as with vault create
                  --store; without it, the server's default store.
  --key URI       the customer key the store's keyring is wrapped by
                  (rsa-file://, pkcs11:, awskms://, …: the URIs and limits
                  of coffer key use-cmk); without it, the server's platform
                  key, or a customer key whose URI the server kept.

What the lost catalog alone held does not come back: soft deletions (every
snapshot still in the store is live again; forget again what should stay
forgotten), the vault's settings (deletion protection, policy, dedup scope:
set them again), its tokens, sources and event log, and who wrote each
snapshot. A vault the catalog still holds snapshots of is refused.`,
		Example: `  coffer vault recover prod --store 's3://backups/prod?region=eu-west-2' --key rsa-file:///etc/coffer/keys/cmk.pem --vault https://backup.example.com:8443 --token @owner-token`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !isRemote(a.vaultRef) {
				return errors.New("vault recover rebuilds a vault on a vault server: give it with --vault https://HOST:PORT (a local vault's catalog sits beside its store: coffer repair index rebuilds its index)")
			}
			c, _, err := a.serverClient()
			if err != nil {
				return err
			}
			defer c.Close()
			res, err := c.RecoverVault(cmd.Context(), api.RecoverVault{Name: args[0], Store: storeURL, Key: keyURI})
			if err != nil {
				return err
			}
			if jsonOut {
				return a.printJSON(res)
			}
			fmt.Fprintf(a.stdout, "vault %s recovered: %d snapshots, %d packs (%s, DEK v%d, keyring generation %d)\n",
				res.Vault.Name, res.Snapshots, res.Packs, res.Vault.KeySource, res.Vault.DEKVersion, res.Vault.KeyringGen)
			for _, u := range res.Unreadable {
				fmt.Fprintf(a.stdout, "left out (does not open under the vault's keys): %s\n", u)
			}
			fmt.Fprintln(a.stdout, "set the vault's settings again (coffer vault set), and forget what should stay forgotten")
			return nil
		},
	}
	cmd.Flags().StringVar(&storeURL, "store", "", "the vault's own store, s3://BUCKET/PREFIX[?endpoint=…&region=…] (see above)")
	cmd.Flags().StringVar(&keyURI, "key", "", "URI of the customer key the store's keyring is wrapped by (see above)")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}
