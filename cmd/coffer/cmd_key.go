package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
	"github.com/coffer-backup/coffer/internal/client"
	"github.com/coffer-backup/coffer/internal/keys"
	"github.com/coffer-backup/coffer/internal/keys/platform"
	"github.com/coffer-backup/coffer/internal/protect"
	"github.com/coffer-backup/coffer/internal/vault"
)

func newKeyCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Check and rotate the keys that encrypt a vault",
		Long: `The vault's data keys (DEKs) encrypt everything it stores; a key encryption
key (KEK: the platform key file, or a customer-managed key) wraps them.
docs/keys.md explains the hierarchy. Every key command works on local vaults
and on a vault server (--vault https://host:port/NAME, with an owner token).`,
	}
	cmd.AddCommand(newKeyStatusCmd(a), newKeyRotateCmd(a), newKeyUseCMKCmd(a), newKeyUsePMKCmd(a), newKeyLogCmd(a), newKeyRetireCmd(a),
		newKeyAddCmd(a), newKeyRemoveCmd(a), newKeySlotsCmd(a))
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
			ctx := cmd.Context()
			var st api.KeyStatus
			var perr error
			if isRemote(a.vaultRef) {
				rv, err := a.openRemote(ctx, a.vaultRef)
				if err != nil {
					return err
				}
				defer rv.Close()
				if st, err = rv.KeyStatus(ctx); err != nil {
					return err
				}
				if !st.Reachable {
					perr = fmt.Errorf("%w: %s", vault.ErrKeyUnavailable, safeText(st.Error))
				}
			} else {
				v, err := a.openVault(ctx, false)
				if err != nil {
					return err
				}
				defer v.Close()
				ki := v.KeyInfo()
				perr = v.ProbeKey(ctx)
				st = api.KeyStatus{KEK: ki.KEK.String(), KeySource: ki.KeySource, WrapAlg: ki.WrapAlg,
					DEKVersion: ki.DEKVersion, DEKCount: ki.DEKCount, KeyringGen: ki.KeyringGen, Reachable: perr == nil}
				if perr != nil {
					st.Error = perr.Error()
				}
			}
			if jsonOut {
				if err := a.printJSON(st); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(a.stdout, "key (KEK):     %s (%s), wraps with %s\n", st.KEK, st.KeySource, st.WrapAlg)
				fmt.Fprintf(a.stdout, "data key:      DEK v%d (%d in keyring generation %d)\n", st.DEKVersion, st.DEKCount, st.KeyringGen)
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
	var kek bool
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Start a new data key (DEK) for new data; old data keeps its key",
		Long: `Create a new data encryption key (DEK) and use it for everything stored from
now on. Nothing stored is re-encrypted: old packs keep the DEK they name, which
stays in the keyring, wrapped by the same key encryption key.

With --kek (local vaults on the platform key): add a new version to the
platform key file now, as a backup does once the key is older than
COFFER_KEK_ROTATION, rewrap this vault's keys under it, and then delete the
versions no vault needs any more (coffer key retire). A vault server rotates
its own platform key (COFFER_KEK_ROTATION on coffer server).`,
		Example: "  coffer key rotate\n  coffer key rotate --kek --vault /mnt/usb/vault",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if kek {
				return a.rotateKEKNow(ctx)
			}
			if isRemote(a.vaultRef) {
				rv, err := a.openRemote(ctx, a.vaultRef)
				if err != nil {
					return err
				}
				defer rv.Close()
				kc, err := rv.RotateKey(ctx)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "new data key DEK v%d in use (keyring generation %d, %d DEKs); nothing was re-encrypted\n", kc.DEKVersion, kc.KeyringGen, kc.DEKCount)
				return nil
			}
			v, err := a.openVault(ctx, false)
			if err != nil {
				return err
			}
			defer v.Close()
			ver, err := v.RotateDEK(ctx)
			if err != nil {
				a.keyEvent(ctx, v, vault.KeyEventDEKRotate, v.KeyInfo().KEK.String(), "DEK rotation failed: "+err.Error(), false)
				return err
			}
			ki := v.KeyInfo()
			a.keyEvent(ctx, v, vault.KeyEventDEKRotate, ki.KEK.String(), fmt.Sprintf("DEK v%d in use", ver), true)
			fmt.Fprintf(a.stdout, "new data key DEK v%d in use (keyring generation %d, %d DEKs); nothing was re-encrypted\n", ver, ki.KeyringGen, ki.DEKCount)
			return nil
		},
	}
	cmd.Flags().BoolVar(&kek, "kek", false, "rotate the platform key (KEK) instead, rewrap this vault and retire unneeded versions")
	return cmd
}

// rotateKEKNow is coffer key rotate --kek on a local vault.
func (a *app) rotateKEKNow(ctx context.Context) error {
	if isRemote(a.vaultRef) {
		return fmt.Errorf("%w: a vault server rotates its own platform key (COFFER_KEK_ROTATION on coffer server); key rotate --kek works on local vaults", api.ErrBadRequest)
	}
	v, err := a.openVault(ctx, false)
	if err != nil {
		return err
	}
	defer v.Close()
	before := v.KeyInfo().KEK
	if v.keys == nil || before.Provider != platform.Provider {
		return fmt.Errorf("the vault's keys are wrapped by %s, not the platform key: rotate that key where it lives", before)
	}
	ref, err := v.keys.Rotate(a.now())
	if err != nil {
		a.keyEvent(ctx, v, vault.KeyEventKEKRotate, before.String(), "platform key rotation failed: "+err.Error(), false)
		return err
	}
	if err := v.Rewrap(ctx, v.keys); err != nil {
		a.keyEvent(ctx, v, vault.KeyEventKEKRotate, before.String(), "rewrap under the rotated platform key failed: "+err.Error(), false)
		return fmt.Errorf("platform key rotated to %s, but the rewrap failed: %w", ref, err)
	}
	a.keyEvent(ctx, v, vault.KeyEventKEKRotate, ref.String(), "platform key rotated (coffer key rotate --kek); vault keys rewrapped from "+before.String(), true)
	ki := v.KeyInfo()
	fmt.Fprintf(a.stdout, "platform key rotated and vault keys rewrapped: %s → %s (keyring generation %d); nothing was re-encrypted\n", before, ki.KEK, ki.KeyringGen)
	a.autoRetire(ctx, v.loc.keyFile)
	return nil
}

// vaultArg lets the key commands name the vault as their first argument,
// as `coffer key use-cmk prod URI` reads; --vault works too.
func (a *app) vaultArg(args []string, want int) ([]string, error) {
	switch len(args) {
	case want:
		return args, nil
	case want + 1:
		name := args[0]
		switch {
		case a.vaultRef == "" || a.vaultRef == name:
			a.vaultRef = name
		case isRemote(a.vaultRef):
			// --vault https://host:port names the server, the argument
			// the vault on it; --vault https://host:port/prod may repeat it.
			server, vname, err := client.SplitVaultURL(a.vaultRef)
			if err != nil {
				return nil, err
			}
			if vname != "" && vname != name {
				return nil, fmt.Errorf("the vault is named twice: %q and --vault %q", name, a.vaultRef)
			}
			a.vaultRef = server + "/" + name
		default:
			return nil, fmt.Errorf("the vault is named twice: %q and --vault %q", name, a.vaultRef)
		}
		return args[1:], nil
	}
	return nil, fmt.Errorf("want [VAULT]%s", strings.Repeat(" ARG", want))
}

func newKeyUseCMKCmd(a *app) *cobra.Command {
	var confirm bool
	cmd := &cobra.Command{
		Use:   "use-cmk [VAULT] URI",
		Short: "Wrap the vault's keys with a customer-managed key instead",
		Long: `Rewrap the vault's root secret and every data key (DEK) with a customer-managed
key: your key, in your HSM or KMS or key file. Nothing stored is re-encrypted.
From then on the vault can be read only while that key is reachable: revoke it,
and backups, restores and checks fail; restore it, and they work again.

The URI is kept on this machine (mode 0600, beside the platform key file), not
in the vault. For a vault on a server the URI goes to the server, which keeps
it in DATA/keys/cmk and reaches the key from there; it accepts only the PKCS#11
modules and key directories its operator allows (coffer server --pkcs11-module,
--key-dir). Supported now:
  rsa-file:///path/key.pem      an RSA 2048 or 3072 private key in a PEM file
  pkcs11:token=…;object=…?module-path=…&pin-source=FILE (or pin-value=PIN)
                                an RSA or AES-256 key in a PKCS#11 token (RFC 7512)
  awskms://alias/NAME?region=R  an AWS KMS key (or awskms:///ARN)
  azurekeyvault://VAULT.vault.azure.net/keys/NAME/VERSION
                                an Azure Key Vault key, at a fixed version
  gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K
                                a Google Cloud KMS key
  hashivault://NAME             a HashiCorp Vault or OpenBao transit key
  passphrase:                   passphrases (local vaults): the first from
                                $COFFER_NEW_PASSWORD_FILE or $COFFER_PASSWORD_FILE
                                (or _COMMAND), else typed twice; more with
                                coffer key add --passphrase
Cloud keys are reached through gocloud.dev/secrets with each provider's
standard credentials (environment, files, instance identity); see
docs/operations.md for the least privilege each needs.

On a vault whose immutability is enabled or locked the switch is a critical
change (whoever controls the new key could destroy every backup by deleting
it): on a vault server it becomes a request a security approver must approve,
and nothing changes until then; a local vault allows it only if it is
single-user, and then with --confirm.

On a local vault that is not single-user (made by "coffer vault create"
without --single-user) the switch cannot be undone, since use-pmk would be
refused: it is announced and needs a yes on a terminal, or --confirm.`,
		Example: `  coffer key use-cmk rsa-file:///etc/coffer/cmk.pem
  coffer key use-cmk prod 'pkcs11:token=coffer;object=backup-kek?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/etc/coffer/pin'
  coffer key use-cmk prod 'awskms://alias/coffer-backup?region=eu-west-2'
  coffer key use-cmk laptop passphrase:`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			rest, err := a.vaultArg(args, 1)
			if err != nil {
				return err
			}
			uri := rest[0]
			ctx := cmd.Context()
			if isPassphraseURI(uri) {
				return a.useKeyPassphrase(ctx, confirm)
			}
			if isRemote(a.vaultRef) {
				rv, err := a.openRemote(ctx, a.vaultRef)
				if err != nil {
					return err
				}
				defer rv.Close()
				kc, req, err := rv.UseCMK(ctx, uri)
				if err != nil {
					return err
				}
				if req != nil {
					printRequest(a, *req)
					return nil
				}
				printKeyChange(a, kc, "on the server")
				return nil
			}
			to, err := keys.Open(uri)
			if err != nil {
				return err
			}
			// A vault already wrapped by this key whose URI this machine
			// lost (a new machine, a restored vault): record it, which is
			// all it needs to open again. SECURITY: the store's latest
			// keyring is not verified here (a store writer can name any
			// key in one): the open below verifies it against the
			// catalog's anchor before anything is said about the vault.
			if loc, id, kek, err := a.localKEK(ctx); err == nil && kek == to.Current() {
				if err := a.keyConfig(loc).Set(id, kek, uri); err != nil {
					return err
				}
			}
			v, err := a.openVault(ctx, false)
			if err != nil {
				return err
			}
			defer v.Close()
			id := v.Record().ID
			cfg := a.keyConfig(v.loc)
			// The URI first: a crash after the rewrap must find it.
			if err := cfg.Set(id, to.Current(), uri); err != nil {
				return err
			}
			before := v.KeyInfo().KEK
			if before == to.Current() {
				fmt.Fprintf(a.stdout, "the vault's keys are already wrapped by %s; its URI is recorded\n", before)
				return nil
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
					a.keyEvent(ctx, v, vault.KeyEventUseCMK, to.Current().String(), "refused: "+err.Error(), false)
					return err
				}
				how = ", critical, confirmed on a single-user vault"
			}
			if !settings.SingleUser {
				if err := a.confirmOneWay("switching to the customer-managed key "+to.Current().String(), useCMKOneWay, confirm); err != nil {
					return err
				}
			}
			if err := v.Rewrap(ctx, to); err != nil {
				a.keyEvent(ctx, v, vault.KeyEventUseCMK, to.Current().String(), "switch from "+before.String()+" failed: "+err.Error(), false)
				return err
			}
			a.keyEvent(ctx, v, vault.KeyEventUseCMK, to.Current().String(), "keys rewrapped from "+before.String()+" ("+keys.Redact(uri)+how+")", true)
			if err := cfg.Keep(id, to.Current()); err != nil {
				fmt.Fprintf(a.stderr, "warning: %v\n", err)
			}
			ki := v.KeyInfo()
			fmt.Fprintf(a.stdout, "keys rewrapped: %s → %s (keyring generation %d, %d DEKs); nothing was re-encrypted\n", before, ki.KEK, ki.KeyringGen, ki.DEKCount)
			if before.Provider == platform.Provider {
				// The platform key versions it used may be needed no more.
				a.autoRetire(ctx, v.loc.keyFile)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&confirm, "confirm", false, "make this critical change (a vault with immutability) on a single-user local vault, or a switch that cannot be undone")
	return cmd
}

func newKeyUsePMKCmd(a *app) *cobra.Command {
	var confirm bool
	cmd := &cobra.Command{
		Use:   "use-pmk [VAULT]",
		Short: "Wrap the vault's keys with the platform key again (needs a second person's approval)",
		Long: `Rewrap the vault's root secret and data keys with the platform key file
(created if missing). The customer-managed key must still be reachable, to
unwrap them once. Nothing stored is re-encrypted.

Taking the key out of the customer's control is a critical change: on a vault
server it becomes a request a security approver must approve; a local vault
allows it only if it is single-user (made by a first backup, or by
coffer vault create --single-user), and then with --confirm.`,
		Example: "  coffer key use-pmk prod --vault https://backup.example.com:8443\n  coffer key use-pmk --confirm     # a single-user local vault",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := a.vaultArg(args, 0); err != nil {
				return err
			}
			ctx := cmd.Context()
			if isRemote(a.vaultRef) {
				rv, err := a.openRemote(ctx, a.vaultRef)
				if err != nil {
					return err
				}
				defer rv.Close()
				kc, req, err := rv.UsePMK(ctx)
				if err != nil {
					return err
				}
				if req != nil {
					printRequest(a, *req)
					return nil
				}
				printKeyChange(a, kc, "the server's platform key")
				return nil
			}
			v, err := a.openVault(ctx, false)
			if err != nil {
				return err
			}
			defer v.Close()
			before := v.KeyInfo().KEK
			if before.Provider == platform.Provider {
				fmt.Fprintf(a.stdout, "the vault's keys are already wrapped by the platform key %s\n", before)
				return nil
			}
			settings, err := v.Settings(ctx)
			if err != nil {
				return err
			}
			critical := strings.Join(protect.UsePMK().Critical, "; ")
			switch {
			case !settings.SingleUser:
				err = fmt.Errorf("%w: %s needs a second person's approval, and a local vault has one principal; only a vault created with `coffer vault create --single-user` allows it here (with --confirm)", vault.ErrApprovalRequired, critical)
			case !confirm:
				err = fmt.Errorf("%w: %s is a critical change: add --confirm to make it on this single-user vault (it is recorded)", vault.ErrApprovalRequired, critical)
			}
			if err != nil {
				a.keyEvent(ctx, v, vault.KeyEventUsePMK, before.String(), "refused: "+err.Error(), false)
				return err
			}
			ks, err := a.platformKeys(v.loc, true)
			if err != nil {
				return err
			}
			if err := v.Rewrap(ctx, ks); err != nil {
				a.keyEvent(ctx, v, vault.KeyEventUsePMK, ks.Current().String(), "switch from "+before.String()+" failed: "+err.Error(), false)
				return err
			}
			ki := v.KeyInfo()
			a.keyEvent(ctx, v, vault.KeyEventUsePMK, ki.KEK.String(), "keys rewrapped from "+before.String()+" (critical, confirmed on a single-user vault)", true)
			fmt.Fprintf(a.stdout, "keys rewrapped: %s → %s (platform key file %s); nothing was re-encrypted\n", before, ki.KEK, ks.Path())
			return nil
		},
	}
	cmd.Flags().BoolVar(&confirm, "confirm", false, "make this critical change on a single-user local vault")
	return cmd
}

func newKeyLogCmd(a *app) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "log",
		Short: "List the vault's key events: rotations, switches, failures to reach the key, recoveries",
		Long: `List every key event of the vault, oldest first: DEK and platform key rotations,
switches to and from a customer-managed key, failures to reach the key and the
recovery after them, each with its time, who did it and the outcome. The log
lives in the catalog and needs no key to read.`,
		Example: "  coffer key log\n  coffer key log --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var evs []api.KeyEvent
			if isRemote(a.vaultRef) {
				rv, err := a.openRemote(ctx, a.vaultRef)
				if err != nil {
					return err
				}
				defer rv.Close()
				if evs, err = rv.KeyEvents(ctx); err != nil {
					return err
				}
			} else {
				var err error
				if evs, err = a.localKeyEvents(ctx); err != nil {
					return err
				}
			}
			if jsonOut {
				enc := json.NewEncoder(a.jsonStdout)
				enc.SetIndent("", "  ")
				if evs == nil {
					evs = []api.KeyEvent{}
				}
				return enc.Encode(evs)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tEVENT\tOUTCOME\tPRINCIPAL\tKEY\tDETAIL")
			for _, e := range evs {
				outcome := "ok"
				if !e.OK {
					outcome = "FAILED"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.Local().Format(time.RFC3339), safeText(e.Event), outcome, safeText(e.Principal), safeText(e.KEK), safeText(e.Detail))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

// localKeyEvents reads the selected local vault's key events from its
// catalog: no key needed.
func (a *app) localKeyEvents(ctx context.Context) ([]api.KeyEvent, error) {
	loc, err := a.locate()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(catalogPath(loc.dir)); err != nil {
		return nil, fmt.Errorf("no vault at %s: %w", loc.dir, vault.ErrNotFound)
	}
	cat, err := sqlite.Open(catalogPath(loc.dir))
	if err != nil {
		return nil, err
	}
	defer cat.Close()
	rec, err := cat.Vault(ctx, localCatalogName)
	if err != nil {
		return nil, err
	}
	evs, err := cat.KeyEvents(ctx, rec.ID)
	if err != nil {
		return nil, err
	}
	out := make([]api.KeyEvent, len(evs))
	for i, e := range evs {
		out[i] = api.KeyEvent{Time: e.Time, Principal: e.Principal, Event: e.Event, KEK: e.KEK, Detail: e.Detail, OK: e.OK}
	}
	return out, nil
}

// printKeyChange says what a key switch on a server did.
func printKeyChange(a *app, kc api.KeyChange, what string) {
	if !kc.Changed {
		fmt.Fprintf(a.stdout, "the vault's keys are already wrapped by %s; its URI is recorded %s\n", kc.After, what)
		return
	}
	fmt.Fprintf(a.stdout, "keys rewrapped: %s → %s (keyring generation %d, %d DEKs); nothing was re-encrypted\n", kc.Before, kc.After, kc.KeyringGen, kc.DEKCount)
}

func newKeyRetireCmd(a *app) *cobra.Command {
	var opt retireOptions
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "retire",
		Short: "Delete the platform key versions no vault needs any more",
		Long: `Delete from the platform key file every older version that no vault needs:
after a rotation, the vaults are rewrapped under the new version, and the old
one then only opens old copies of them. A copy of a vault's directory (its
store and catalog) saved while it was wrapped under a retired version never
opens again: that is what makes putting back an old copy useless to whoever
can write the vault directory. Keep no copy of the key file beside copies of
the vault you would not want opened.

A version stays while any vault still needs it: every vault under
$COFFER_HOME/vaults, and every vault directory opened with this key file
(listed in platform.vaults beside it). Before deleting, coffer key retire
rewraps each vault still wrapped under an older version (as its next backup
would). It deletes nothing while any of those vaults cannot be read (a
missing or damaged directory, an unmounted disk): it names it, and you mount
it, repair it, or, if it is gone for good, name it with --forget.

Versions made before this machine listed its vaults (coffer before the list
existed) may wrap a vault opened only by path and never since: they stay
until you open each such vault once (coffer snapshots --vault DIR) and confirm
with --all-listed that the list is complete. The current version always stays.

Backups run it after they rotate the platform key, and key use-cmk after a
switch. A vault server retires its own key file's versions (docs/keys.md).`,
		Example: `  coffer key retire --dry-run
  coffer key retire
  coffer key retire --forget /mnt/old-disk/vault
  coffer key retire --all-listed --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if isRemote(a.vaultRef) {
				return fmt.Errorf("%w: a vault server retires its own platform key versions; key retire works on this machine's key file", api.ErrBadRequest)
			}
			loc, err := a.locate()
			if err != nil {
				return err
			}
			opt.rewrap = true
			rep, err := a.retirePlatform(ctx, loc.keyFile, opt)
			if err != nil {
				return err
			}
			if jsonOut {
				if err := a.printJSON(rep); err != nil {
					return err
				}
			} else {
				printRetire(a, rep)
			}
			if len(rep.Blocked) > 0 {
				return fmt.Errorf("every platform key version kept: %s could not be read (listed above)", plural(len(rep.Blocked), "vault", "vaults"))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&opt.dryRun, "dry-run", false, "say what would be deleted and what needs each version; change nothing")
	cmd.Flags().BoolVar(&opt.allListed, "all-listed", false, "confirm that every vault using this key file is under $COFFER_HOME/vaults or listed, so versions older than the list can go too")
	cmd.Flags().StringArrayVar(&opt.forget, "forget", nil, "remove a listed vault `DIR` that is gone for good (repeatable)")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

// printRetire prints a retire report for people.
func printRetire(a *app, rep retireReport) {
	fmt.Fprintf(a.stdout, "platform key %s (%s), current version v%d\n", rep.KeyID, rep.KeyFile, rep.Current)
	for _, p := range rep.Forgotten {
		fmt.Fprintf(a.stdout, "forgotten: %s\n", safeText(p))
	}
	for _, p := range rep.Rewrapped {
		fmt.Fprintf(a.stdout, "rewrapped under v%d: %s\n", rep.Current, safeText(p))
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tCREATED\tSTATE\tNEEDED BY")
	for _, v := range rep.Versions {
		state := v.State
		switch state {
		case "unlisted":
			state = "kept (older than the list of vaults: --all-listed)"
		case "kept":
			state = "kept (a vault could not be read)"
		}
		by := make([]string, len(v.NeededBy))
		for i, p := range v.NeededBy {
			by[i] = safeText(p)
		}
		fmt.Fprintf(tw, "v%d\t%s\t%s\t%s\n", v.Version, v.Created.Local().Format(time.RFC3339), state, strings.Join(by, ", "))
	}
	tw.Flush()
	for _, b := range rep.Blocked {
		fmt.Fprintf(a.stdout, "cannot read %s: %s\n", safeText(b.Vault), safeText(b.Error))
	}
	switch {
	case len(rep.Blocked) > 0:
		fmt.Fprintln(a.stdout, "nothing deleted: a vault that cannot be read may need any version")
	case rep.DryRun:
		fmt.Fprintln(a.stdout, "dry run: nothing deleted")
	case len(rep.Deleted) > 0:
		fmt.Fprintf(a.stdout, "deleted from the key file: %s\n", versionList(rep.Deleted))
	default:
		fmt.Fprintln(a.stdout, "nothing to delete")
	}
}
