package main

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/client"
	"github.com/coffer-backup/coffer/internal/keys"
	"github.com/coffer-backup/coffer/internal/keys/passphrase"
	"github.com/coffer-backup/coffer/internal/vault"
)

// serverClient returns a client for the server that --vault names, and the
// vault name in it ("" when the URL names only the server). --vault NAME
// with COFFER_VAULT=https://host:port arrives here as that server's URL
// already (resolveVaultRef).
func (a *app) serverClient() (*client.Client, string, error) {
	ref := a.vaultRef
	if !isRemote(ref) {
		return nil, "", errors.New("give the vault server with --vault https://host:port[/VAULT] (or COFFER_VAULT)")
	}
	srv, name, err := client.SplitVaultURL(ref)
	if err != nil {
		return nil, "", err
	}
	c, err := a.newClient(srv)
	return c, name, err
}

func newTokenCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke a vault server's tokens",
		Long: `Tokens authenticate agents and people to a vault server. Each has a role:
  owner            server-wide: everything, including vaults and tokens
  backup-operator  one vault: back up, list, restore; no deletion
  backup-reader    one vault: list only
A token is 256 random bits, shown once when created; the server keeps only its
hash. Revocation takes effect on the next request.`,
	}
	cmd.AddCommand(newTokenCreateCmd(a), newTokenListCmd(a), newTokenRevokeCmd(a))
	return cmd
}

func newTokenCreateCmd(a *app) *cobra.Command {
	var role, name, principal string
	var expires time.Duration
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Issue a token (printed once)",
		Long: `Issue a bearer token, printed once. A token either carries a role itself
(--role, on the vault in --vault or server-wide), or is issued to a principal
(--principal, a user or an agent made with "coffer user create") and acts with
the principal's role assignments ("coffer role assign").

A token never does more than the token that issued it: one whose role, or whose
principal's roles, go beyond yours is refused, and if a role is later taken
from you, the tokens you issued lose it too. Revoking a token revokes the tokens
it issued (its expiry does not: agents added during a login outlive it). To
retire the initial owner token, make an owner who logs in ("coffer user create
--password-stdin", "coffer role assign --role owner") first. No token made here approves
requests: a security approver logs in ("coffer login"), or gets a token on the
server machine ("coffer server approver-token"). Names are like principal
names (letters, digits, '.', '_', '@', '-').`,
		Example: `  coffer token create --vault https://backup.example.com:8443/prod --role backup-operator --name web01
  coffer token create --vault https://backup.example.com:8443 --role owner --name alice --expires 720h
  coffer token create --vault https://backup.example.com:8443 --principal web01 --name web01-2026`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, vaultName, err := a.serverClient()
			if err != nil {
				return err
			}
			defer c.Close()
			var req api.CreateToken
			switch {
			case principal != "" && role != "":
				return errors.New("give --role or --principal, not both: a principal's token takes the principal's roles")
			case principal != "":
				req = api.CreateToken{Name: name, Principal: principal}
			case role == "":
				return errors.New("give the token's role with --role, or the principal it is for with --principal")
			default:
				req = api.CreateToken{Name: name, Role: role, Vault: vaultName}
			}
			if expires > 0 {
				req.Expires = a.now().Add(expires).UTC()
			}
			t, err := c.CreateToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			if jsonOut {
				return a.printJSON(t)
			}
			fmt.Fprintln(a.stdout, t.Secret)
			scope := "server-wide"
			if t.Vault != "" {
				scope = "vault " + t.Vault
			}
			if principal != "" {
				fmt.Fprintf(a.stderr, "token %s for principal %s created; it is shown only this once\n", t.ID, principal)
				return nil
			}
			fmt.Fprintf(a.stderr, "token %s (%s, %s) created; it is shown only this once\n", t.ID, t.Role, scope)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&role, "role", "", "owner, backup-contributor, backup-operator, backup-reader or key-officer")
	f.StringVar(&principal, "principal", "", "issue the token to this user or agent (it acts with their roles)")
	f.StringVar(&name, "name", "", "a name to recognise the token by (the agent's host, a person)")
	f.DurationVar(&expires, "expires", 0, "lifetime, e.g. 720h (default: no expiry)")
	f.BoolVar(&jsonOut, "json", false, "print JSON (includes the token)")
	return cmd
}

func newTokenListCmd(a *app) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List tokens (never their secrets)",
		Example: "  coffer token list --vault https://backup.example.com:8443",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.serverClient()
			if err != nil {
				return err
			}
			defer c.Close()
			toks, err := c.Tokens(cmd.Context())
			if err != nil {
				return err
			}
			if jsonOut {
				return a.printJSON(toks)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tROLE\tVAULT\tCREATED\tEXPIRES\tSTATE")
			now := a.now()
			for _, t := range toks {
				state, exp := "active", "never"
				if !t.Expires.IsZero() {
					exp = t.Expires.Local().Format(time.RFC3339)
					if !now.Before(t.Expires) {
						state = "expired"
					}
				}
				if !t.Revoked.IsZero() {
					state = "revoked " + t.Revoked.Local().Format(time.RFC3339)
				}
				v := t.Vault
				if v == "" {
					v = "(server)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", safeText(t.ID), safeText(t.Name), safeText(t.Role), safeText(v), t.Created.Local().Format(time.RFC3339), exp, state)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

func newTokenRevokeCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a token at once",
		Long: `Revoke a token at once, and with it every token it issued (and those they
issued). Revoking a token after which nobody could act as an owner is a
critical change: it waits for a security approver.`,
		Example: "  coffer token revoke 3f9a1c0d2b7e4a65 --vault https://backup.example.com:8443",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.serverClient()
			if err != nil {
				return err
			}
			defer c.Close()
			req, err := c.RevokeToken(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if req != nil {
				printRequest(a, *req)
				return nil
			}
			fmt.Fprintf(a.stdout, "token %s revoked\n", args[0])
			return nil
		},
	}
}

func newVaultCreateCmd(a *app) *cobra.Command {
	var jsonOut, singleUser bool
	var scope, keyURI, storeURL string
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a vault, locally or on a vault server",
		Long: `Create a vault. On a vault server (--vault https://host:port, an owner token)
this is the only way to make one. A local vault is also made by its first
backup, and is then single-user; create it here to choose what only creation
can:

  --single-user   the vault has one principal, so critical deletion-protection
                  and key changes (shortening soft delete, lowering the minimum
                  retention, disabling immutability, coffer key use-pmk) are
                  allowed with --confirm rather than refused for want of a
                  second person to approve them. Without it, a local vault
                  refuses them: whatever strengthens its protection can never
                  be undone (coffer asks, or wants --confirm, before such a
                  change). It cannot be changed later.
  --dedup-scope   vault (default): the backups of every source deduplicate
                  against each other. source: each source has its own dedup
                  domain and can neither probe nor read another's backups
                  (see coffer vault set --help). Choose source at creation
                  to have no data that agents could ever probe vault-wide.
  --key passphrase:
                  local vaults: the vault's keys are wrapped by passphrases
                  instead of the platform key file (docs/keys.md): the first
                  is read from $COFFER_NEW_PASSWORD_FILE or
                  $COFFER_PASSWORD_FILE (or _COMMAND), else typed twice; every
                  later command reads it from $COFFER_PASSWORD_FILE,
                  $COFFER_PASSWORD_COMMAND or the terminal. Add more with
                  coffer key add --passphrase. Never on the command line.
  --store s3://BUCKET/PREFIX[?endpoint=https://HOST:PORT&region=REGION]
                  vault servers, owner token: the vault lives in this
                  S3-compatible bucket under PREFIX instead of the server's
                  default store. The server records it and reopens it on
                  every start; it takes the bucket's credentials from the
                  standard AWS chain (environment, shared files, instance
                  role), never from the URL (docs/operations.md).`,
		Example: `  coffer vault create prod --vault https://backup.example.com:8443 --token @owner-token
  coffer vault create shared --dedup-scope source --vault https://backup.example.com:8443
  coffer vault create prod --store 's3://backups/prod?region=eu-west-2' --vault https://backup.example.com:8443
  coffer vault create laptop --single-user
  coffer vault create laptop --single-user --key passphrase:`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("dedup-scope") {
				if err := checkDedupScope(scope); err != nil {
					return err
				}
			}
			if !isRemote(a.vaultRef) {
				if storeURL != "" {
					return errors.New("--store is for vaults on a vault server (--vault https://HOST:PORT): a local vault's store is its directory")
				}
				return a.createLocalVault(cmd, args[0], singleUser, vault.DedupScope(scope), keyURI, jsonOut)
			}
			if keyURI != "" {
				return errors.New("--key is for local vaults: a vault server wraps a new vault with its platform key; switch it with coffer key use-cmk")
			}
			if singleUser {
				return errors.New("--single-user is for local vaults: a vault server has several principals, and a security approver approves critical changes")
			}
			c, _, err := a.serverClient()
			if err != nil {
				return err
			}
			defer c.Close()
			vi, err := c.CreateVaultWith(cmd.Context(), api.CreateVault{Name: args[0], Store: storeURL})
			if err != nil {
				return err
			}
			if scope != "" && scope != string(vault.DedupScopeVault) {
				// Narrowing the scope is never critical: applied at once.
				if _, err := c.Vault(args[0]).ChangeSettings(cmd.Context(), api.SettingsChange{DedupScope: &scope}); err != nil {
					return fmt.Errorf("vault %s created, but setting its dedup scope failed (run coffer vault set --dedup-scope %s): %w", args[0], scope, err)
				}
			}
			if jsonOut {
				return a.printJSON(vi)
			}
			fmt.Fprintf(a.stdout, "vault %s created (%s, %s, DEK v%d)\n", vi.Name, vi.Algorithm, vi.KeySource, vi.DEKVersion)
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	cmd.Flags().BoolVar(&singleUser, "single-user", false, "local vaults: allow critical protection changes with --confirm (fixed at creation)")
	cmd.Flags().StringVar(&keyURI, "key", "", "local vaults: passphrase: to wrap the vault's keys with passphrases (see above)")
	cmd.Flags().StringVar(&scope, "dedup-scope", "", "vault (dedup across all sources, the default) or source (a dedup domain per source)")
	cmd.Flags().StringVar(&storeURL, "store", "", "vault servers: the vault's own store, s3://BUCKET/PREFIX[?endpoint=…&region=…] (see above)")
	return cmd
}

// createdDetail describes the settings a vault was created with.
func createdDetail(singleUser bool, scope vault.DedupScope) string {
	var parts []string
	if singleUser {
		parts = append(parts, "single-user: critical changes allowed with --confirm")
	}
	if scope.OrDefault() != vault.DedupScopeVault {
		parts = append(parts, "dedup scope "+string(scope))
	}
	return "created " + strings.Join(parts, ", ")
}

// createLocalVault creates local vault name (a name or a directory).
func (a *app) createLocalVault(cmd *cobra.Command, name string, singleUser bool, scope vault.DedupScope, keyURI string, jsonOut bool) error {
	if a.vaultRef != "" && a.vaultRef != name {
		return fmt.Errorf("the vault is named twice: %q and --vault %q", name, a.vaultRef)
	}
	a.vaultRef = name // located by its name from here on, never as the default vault
	var pass *passphrase.Provider
	if keyURI != "" {
		if !isPassphraseURI(keyURI) {
			return fmt.Errorf("--key %s: vault create takes passphrase: (a customer-managed key is set with coffer key use-cmk after creation)", keys.Redact(keyURI))
		}
		// The passphrase before the vault: without one, nothing is made.
		if loc, err := a.locate(); err == nil && vaultExists(loc.dir) {
			return fmt.Errorf("vault %s: %w at %s", name, vault.ErrExists, loc.dir)
		}
		p, err := a.createPassphraseProvider(cmd.Context(), name)
		if err != nil {
			return err
		}
		pass = p
	}
	a.explicitCreate = true
	ctx := cmd.Context()
	v, err := a.openVault(ctx, true)
	if err != nil {
		return err
	}
	defer v.Close()
	if !v.created {
		return fmt.Errorf("vault %s: %w at %s", name, vault.ErrExists, v.loc.dir)
	}
	if pass != nil {
		// Created under the platform key and rewrapped at once: the
		// rewrap deletes that first generation (docs/keys.md).
		if err := v.Rewrap(ctx, pass); err != nil {
			return fmt.Errorf("vault %s was created, but wrapping its keys with the passphrase failed (run coffer key use-cmk passphrase:): %w", name, err)
		}
		a.keyEvent(ctx, v, vault.KeyEventUseCMK, pass.Current().String(), "created with a passphrase", true)
	}
	if singleUser || scope != "" {
		s, err := v.Settings(ctx)
		if err != nil {
			return err
		}
		s.SingleUser = singleUser
		if scope != "" {
			s.DedupScope = scope
		}
		s.Updated = a.now().UTC()
		if err := v.InitSettings(ctx, s, a.principal()); err != nil {
			return err
		}
		if err := v.catalog.AddEvent(ctx, vault.VaultEvent{Vault: v.Record().ID, Time: a.now().UTC(), Principal: a.principal(),
			Event: vault.EventSettings, Detail: createdDetail(singleUser, s.DedupScope), OK: true}); err != nil {
			return err
		}
	}
	if jsonOut {
		return a.printJSON(map[string]any{"name": v.loc.name, "path": v.loc.dir, "id": v.Record().ID.String(), "single_user": singleUser})
	}
	mode := ""
	if singleUser {
		mode = ", single-user"
	}
	fmt.Fprintf(a.stdout, "vault %s created at %s (%s%s)\n", v.loc.name, v.loc.dir, v.KeyInfo().Algorithm, mode)
	return nil
}
