package main

import (
	"bufio"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/client"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/tlsconf"
	"github.com/coffer-backup/coffer/internal/vault"
)

// readPassword reads one line from stdin, for --password-stdin.
func (a *app) readPassword() (string, error) {
	line, err := bufio.NewReader(a.stdin).ReadString('\n')
	line = strings.TrimRight(line, "\r\n")
	if line == "" && err != nil {
		return "", errors.New("--password-stdin: no password on standard input")
	}
	return line, nil
}

func newUserCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "user",
		Short: "Create and list a vault server's principals (users and agents)",
		Long: `A principal is a user or an agent of a vault server. Roles are assigned to it
("coffer role assign"), and tokens are issued to it ("coffer token create
--principal", or "coffer login" with its password); a principal's token may do
what any of its roles allows, never more than the token that issued it. Names
are 1-64 letters, digits, '.', '_', '@' or '-', unique without regard to case,
and may not start with usr_ or agt_ (the form of IDs, which any command taking
a principal also accepts). Needs the role.manage permission (owner).`,
	}
	cmd.AddCommand(newUserCreateCmd(a), newUserListCmd(a))
	return cmd
}

func newUserCreateCmd(a *app) *cobra.Command {
	var agent, passwordStdin, jsonOut bool
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a user (or with --agent, an agent)",
		Example: `  echo 'a long passphrase' | coffer user create alice --password-stdin --vault https://backup.example.com:8443
  coffer user create web01 --agent`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.serverClient()
			if err != nil {
				return err
			}
			defer c.Close()
			req := api.CreatePrincipal{Name: args[0], Kind: "user"}
			if agent {
				req.Kind = "agent"
			}
			if passwordStdin {
				if req.Password, err = a.readPassword(); err != nil {
					return err
				}
			}
			p, err := c.CreatePrincipal(cmd.Context(), req)
			if err != nil {
				return err
			}
			if jsonOut {
				return a.printJSON(p)
			}
			fmt.Fprintf(a.stdout, "%s %s created (%s); assign it roles with coffer role assign --principal %s\n", p.Kind, p.Name, p.ID, p.Name)
			return nil
		},
	}
	cmd.Flags().BoolVar(&agent, "agent", false, "an agent (a machine that backs up) rather than a person")
	cmd.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read a password (12 characters or more) from standard input, for coffer login")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

func newUserListCmd(a *app) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List principals and their roles",
		Example: "  coffer user list --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.serverClient()
			if err != nil {
				return err
			}
			defer c.Close()
			ps, err := c.Principals(cmd.Context())
			if err != nil {
				return err
			}
			if jsonOut {
				return a.printJSON(ps)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tKIND\tID\tPASSWORD\tROLES")
			for _, p := range ps {
				var roles []string
				for _, r := range p.Roles {
					roles = append(roles, roleText(r))
				}
				pw := "no"
				if p.HasPassword {
					pw = "yes"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", safeText(p.Name), safeText(p.Kind), safeText(p.ID), pw, safeList(roles, ", "))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

func roleText(r api.RoleAssignment) string {
	if r.Vault == "" {
		return r.Role + " (server)"
	}
	return r.Role + " on " + r.Vault
}

func newRoleCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "role",
		Short: "Assign, list and revoke principals' roles on a vault server",
		Long: `Roles (docs/security.md has the permission table): owner, backup-contributor,
backup-operator, backup-reader, key-officer, security-approver. A role is held on
the whole server, or with --vault on one vault (owner and security-approver only
server-wide). Deny by default: a principal may do only what a role allows.

--vault NAME names a vault on the server COFFER_VAULT points at;
--vault https://host:port/NAME works too.`,
	}
	cmd.AddCommand(newRoleAssignCmd(a, true), newRoleAssignCmd(a, false), newRoleListCmd(a))
	return cmd
}

func newRoleAssignCmd(a *app, assign bool) *cobra.Command {
	var principal, role string
	use, short := "revoke", "Revoke a role (revoking the last owner needs approval)"
	if assign {
		use, short = "assign", "Assign a role (making a security approver needs approval)"
	}
	cmd := &cobra.Command{
		Use:     use,
		Short:   short,
		Example: "  coffer role " + use + " --principal alice --role backup-contributor --vault prod",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if principal == "" || role == "" {
				return errors.New("give --principal and --role")
			}
			c, vaultName, err := a.serverClient()
			if err != nil {
				return err
			}
			defer c.Close()
			ra := api.RoleAssignment{Principal: principal, Role: role, Vault: vaultName}
			var res api.RoleResult
			if assign {
				res, err = c.AssignRole(cmd.Context(), ra)
			} else {
				res, err = c.RevokeRole(cmd.Context(), ra)
			}
			if err != nil {
				return err
			}
			if res.Request != nil {
				printRequest(a, *res.Request)
				return nil
			}
			verb := "revoked from"
			if assign {
				verb = "assigned to"
			}
			fmt.Fprintf(a.stdout, "%s %s %s\n", roleText(ra), verb, principal)
			return nil
		},
	}
	cmd.Flags().StringVar(&principal, "principal", "", "the user or agent")
	cmd.Flags().StringVar(&role, "role", "", "owner, backup-contributor, backup-operator, backup-reader, key-officer or security-approver")
	return cmd
}

func newRoleListCmd(a *app) *cobra.Command {
	var principal string
	var jsonOut bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List role assignments",
		Example: "  coffer role list --vault prod\n  coffer role list --principal alice --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, vaultName, err := a.serverClient()
			if err != nil {
				return err
			}
			defer c.Close()
			rs, err := c.Roles(cmd.Context(), principal, vaultName)
			if err != nil {
				return err
			}
			if jsonOut {
				return a.printJSON(rs)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PRINCIPAL\tROLE\tSCOPE\tSINCE\tBY")
			for _, r := range rs {
				scope := "server"
				if r.Vault != "" {
					scope = "vault " + r.Vault
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", safeText(r.Principal), safeText(r.Role), safeText(scope), r.Created.Local().Format(time.RFC3339), safeText(r.CreatedBy))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&principal, "principal", "", "only this principal's roles")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

func newLoginCmd(a *app) *cobra.Command {
	var ttl time.Duration
	var jsonOut, save bool
	cmd := &cobra.Command{
		Use:   "login NAME",
		Short: "Exchange a user's password for a token",
		Long: `Log in to a vault server as user NAME. On a terminal the password is asked for
and not echoed; otherwise it is the first line of standard input. The token,
acting with the user's roles, expires after --ttl; repeated failures from one
address are slowed down.

With --save (or a yes when asked on a terminal) the token is kept in
$COFFER_HOME/tokens (mode 0600) for this server alone: later commands against
the same https://host:port use it when neither --token nor COFFER_TOKEN is
given, until it expires. Without it, the token is printed once on stdout, for
--token or COFFER_TOKEN.`,
		Example: "  coffer login alice --vault https://backup.example.com:8443 --save\n  coffer login alice --vault https://backup.example.com:8443 < ~/.coffer-pass",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := a.vaultRef
			if !isRemote(ref) {
				return errors.New("give the vault server with --vault https://host:port (or COFFER_VAULT)")
			}
			srv, _, err := client.SplitVaultURL(ref)
			if err != nil {
				return err
			}
			pw, err := a.loginPassword(args[0])
			if err != nil {
				return err
			}
			cfg, err := tlsconf.ClientConfig(a.tlsOptions())
			if err != nil {
				return err
			}
			c, err := client.New(client.Options{Server: srv, TLS: cfg, Proxy: a.proxyFunc()})
			if err != nil {
				return err
			}
			defer c.Close()
			t, err := c.Login(cmd.Context(), api.Login{Name: args[0], Password: pw, TTL: ttl})
			if err != nil {
				return err
			}
			if !save && !jsonOut && a.interactive() {
				fmt.Fprintf(a.stderr, "Save the token for later commands against %s (in $COFFER_HOME/tokens, mode 0600)? [y/N] ", srv)
				ans := strings.ToLower(strings.TrimSpace(readLine(a.stdin, 64)))
				save = ans == "y" || ans == "yes"
			}
			if save {
				p, err := a.saveToken(savedToken{Server: srv, Principal: args[0], ID: t.ID, Expires: t.Expires, Secret: t.Secret})
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stderr, "logged in as %s: token %s saved in %s for %s; it expires %s\n", safeText(args[0]), safeText(t.ID), p, srv, t.Expires.Local().Format(time.RFC3339))
				if jsonOut {
					t.Secret = "" // saved, not printed
					return a.printJSON(t)
				}
				return nil
			}
			if jsonOut {
				return a.printJSON(t)
			}
			fmt.Fprintln(a.stdout, t.Secret)
			fmt.Fprintf(a.stderr, "logged in as %s: token %s expires %s\n", args[0], t.ID, t.Expires.Local().Format(time.RFC3339))
			return nil
		},
	}
	durationFlag(cmd.Flags(), &ttl, "ttl", 12*time.Hour, "how long the token lasts (at most 168h)")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON (includes the token, unless --save)")
	cmd.Flags().BoolVar(&save, "save", false, "keep the token (0600, under $COFFER_HOME) for later commands against this server")
	return cmd
}

func newAssignApproverCmd(a *app) *cobra.Command {
	var dataDir, principal string
	var passwordStdin bool
	cmd := &cobra.Command{
		Use:   "assign-approver",
		Short: "Make a principal a security approver (on the server machine only)",
		Long: `Assign the security-approver role to a principal straight in the server's
catalog. Only someone with the server machine's data directory can: the API
refuses the first approver, and further ones need an existing approver's
approval, so that an owner cannot make an approver and approve their own
critical changes.

An approver's login approves only with a password set here, on the server
machine (--password-stdin, typed by the approver): a password given when the
user was created through the API was chosen by whoever created it, typically
an owner. Run it again with --password-stdin for an approver made through an
approved request, or to change an approver's password.`,
		Example: "  coffer server assign-approver --data /var/lib/coffer --principal alice --password-stdin",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" || principal == "" {
				return errors.New("give the server's data directory with --data and the principal with --principal")
			}
			if passwordStdin {
				pw, err := a.readPassword()
				if err != nil {
					return err
				}
				if err := server.SetPassword(cmd.Context(), dataDir, principal, pw, a.now()); err != nil {
					return err
				}
			}
			err := server.AssignApprover(cmd.Context(), dataDir, principal, a.now())
			if err != nil && !(passwordStdin && errors.Is(err, vault.ErrExists)) {
				return err
			}
			fmt.Fprintf(a.stdout, "%s is a security approver\n", principal)
			if !passwordStdin {
				fmt.Fprintf(a.stderr, "its logins approve only once its password is set here: run again with --password-stdin\n")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data", "", "the server's data directory")
	cmd.Flags().StringVar(&principal, "principal", "", "the user to make an approver")
	cmd.Flags().BoolVar(&passwordStdin, "password-stdin", false, "set the approver's password (12 characters or more) from standard input, on the server machine")
	return cmd
}

func newSourceCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "source",
		Short: "Add machines that back up into a vault on a server; list what each reports",
	}
	cmd.AddCommand(newSourceListCmd(a))
	var expires time.Duration
	var jsonOut bool
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Add a source: an agent with the backup-operator role on the vault, and its token",
		Long: `Add a source to a vault on a server: the agent principal NAME (created when new)
gets the backup-operator role on the vault, and a new token for it is printed
once. Needs source.manage (owner or backup-contributor): a contributor can add
machines without being able to make anything more powerful than an operator.
An existing agent is reused only when its one role is backup-operator on this
vault; for any other, choose a new name.`,
		Example: "  coffer source add web01 --vault https://backup.example.com:8443/prod",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, vaultName, err := a.serverClient()
			if err != nil {
				return err
			}
			defer c.Close()
			if vaultName == "" {
				return errors.New("name the vault: --vault https://host:port/VAULT (or --vault VAULT with COFFER_VAULT=https://host:port)")
			}
			req := api.AddSource{Name: args[0]}
			if expires > 0 {
				req.Expires = a.now().Add(expires).UTC()
			}
			t, err := c.Vault(vaultName).AddSource(cmd.Context(), req)
			if err != nil {
				return err
			}
			if jsonOut {
				return a.printJSON(t)
			}
			fmt.Fprintln(a.stdout, t.Secret)
			fmt.Fprintf(a.stderr, "source %s added to %s (backup-operator); token %s is shown only this once\n", args[0], vaultName, t.ID)
			return nil
		},
	}
	add.Flags().DurationVar(&expires, "expires", 0, "the token's lifetime, e.g. 8760h (default: no expiry)")
	add.Flags().BoolVar(&jsonOut, "json", false, "print JSON (includes the token)")
	cmd.AddCommand(add)
	return cmd
}
