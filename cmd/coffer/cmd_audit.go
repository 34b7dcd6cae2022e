package main

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/audit"
	"github.com/coffer-backup/coffer/internal/catalog/postgres"
	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
	"github.com/coffer-backup/coffer/internal/fsutil"
	"github.com/coffer-backup/coffer/internal/posture"
	"github.com/coffer-backup/coffer/internal/retention"
	"github.com/coffer-backup/coffer/internal/server"
)

func newAuditCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Read, export and verify a vault server's tamper-evident audit log",
		Long: `Every request to a vault server that changes state, reads data or is denied is
an entry of its audit log, with principal, source address, vault, operation,
parameters (secrets redacted), outcome and time. The entries form a Merkle tree
log; the server signs a checkpoint of it every minute (Ed25519, Go's note
format). "audit verify" recomputes the tree and checks every checkpoint:
changing, removing or reordering an entry is detected, and rolling the log back
is detected against the checkpoint your last verify saw (kept in
$COFFER_HOME/audit/). docs/audit.md explains it.`,
	}
	cmd.AddCommand(newAuditLogCmd(a), newAuditExportCmd(a), newAuditVerifyCmd(a))
	return cmd
}

func newAuditLogCmd(a *app) *cobra.Command {
	var principal, tokenID, since, op string
	var limit int
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "log",
		Short: "List audit entries",
		Example: `  coffer audit log --vault prod --since 24h
  coffer audit log --principal user:alice --json
  coffer audit log --token-id 0123456789abcdef`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, vaultName, err := a.serverClient()
			if err != nil {
				return err
			}
			defer c.Close()
			q := url.Values{}
			if vaultName != "" {
				q.Set("vault", vaultName)
			}
			if principal != "" {
				q.Set("principal", principal)
			}
			if tokenID != "" {
				q.Set("token", tokenID)
			}
			if op != "" {
				q.Set("op", op)
			}
			if since != "" {
				d, err := retention.ParseDuration(since)
				if err != nil {
					t, terr := time.Parse(time.RFC3339, since)
					if terr != nil {
						return fmt.Errorf("--since %q: want a duration (24h, 7d) or an RFC 3339 time", since)
					}
					q.Set("since", t.UTC().Format(time.RFC3339))
				} else {
					q.Set("since", a.now().Add(-d).UTC().Format(time.RFC3339))
				}
			}
			if limit > 0 {
				q.Set("limit", fmt.Sprint(limit))
			}
			es, err := c.AuditLog(cmd.Context(), q)
			if err != nil {
				return err
			}
			if jsonOut {
				return a.printJSON(es)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "#\tTIME\tOUTCOME\tPRINCIPAL\tTOKEN\tSOURCE\tVAULT\tOPERATION\tDETAIL")
			for _, e := range es {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Index, e.Time.Local().Format(time.RFC3339), safeText(e.Outcome),
					safeText(e.Principal), safeText(e.Token), safeText(e.Source), safeText(e.Vault), safeText(e.Op), oneLine(e.Detail, 80))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&principal, "principal", "", "only this principal (user:NAME, agent:NAME, token:ID (name), server)")
	cmd.Flags().StringVar(&tokenID, "token-id", "", "only what the token with this ID did (its ID, from coffer token list)")
	cmd.Flags().StringVar(&since, "since", "", "only entries since: a duration back from now (24h, 7d) or an RFC 3339 time")
	cmd.Flags().StringVar(&op, "op", "", "only this operation (e.g. 'POST /v1/vaults/{vault}/forget')")
	cmd.Flags().IntVar(&limit, "limit", 0, "only the newest N")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

// oneLine is s escaped for a table cell (safeText), cut to n bytes at a
// rune boundary.
func oneLine(s string, n int) string {
	s = safeText(s)
	if len(s) > n {
		i := n - 1
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		return s[:i] + "…"
	}
	return s
}

func newAuditExportCmd(a *app) *cobra.Command {
	var out, dataDir, catalogFlag, vkeyFlag string
	cmd := &cobra.Command{
		Use:   "export --out FILE",
		Short: "Export the audit log as evidence: entries, signed checkpoints, the public key",
		Long: `Write the audit log up to a freshly signed checkpoint to a tar file, for an
auditor: "coffer audit verify --export FILE" checks it offline, on any machine.
From a server (--vault https://host:port, a token with audit.read), on the
server machine from its data directory (--data DIR; with COFFER_CATALOG set, as
for the server, from its PostgreSQL catalog), or from servers' PostgreSQL
catalog (--catalog URL, with their --verifier-key).`,
		Example: `  coffer audit export --out evidence.tar --vault https://backup.example.com:8443
  coffer audit export --out evidence.tar --data /var/lib/coffer
  coffer audit export --out evidence.tar --catalog postgres://auditor@db.example.com/coffer --verifier-key 'coffer-audit+…'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("give the file to write with --out")
			}
			// The archive goes to a temporary file beside --out, never to
			// memory (a log, or a hostile server's answer, may be large).
			tmp, err := os.CreateTemp(filepath.Dir(out), ".coffer-audit-*.tar")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			defer tmp.Close()
			catalogURL, err := a.auditCatalogURL(catalogFlag, dataDir)
			if err != nil {
				return err
			}
			if dataDir != "" || catalogURL != "" {
				cat, vkey, _, err := openAuditLog(cmd.Context(), dataDir, catalogURL)
				if err != nil {
					return err
				}
				defer cat.Close()
				switch {
				case vkey != "" && vkeyFlag != "" && vkeyFlag != vkey:
					return errors.New("--verifier-key differs from the server's audit/verifier.key")
				case vkey == "" && vkeyFlag == "":
					return errors.New("give the servers' audit verifier key with --verifier-key (DATA/audit/verifier.key of any of them), or --data DIR on a server: the catalog does not hold it")
				case vkey == "":
					vkey = vkeyFlag
				}
				if err := audit.Export(cmd.Context(), cat, vkey, tmp); err != nil {
					return err
				}
			} else {
				c, _, err := a.serverClient()
				if err != nil {
					return err
				}
				defer c.Close()
				if err := c.AuditExport(cmd.Context(), tmp); err != nil {
					return err
				}
			}
			// Check what is written, so that a broken download is not
			// handed to an auditor as evidence.
			if _, err := tmp.Seek(0, io.SeekStart); err != nil {
				return err
			}
			rep, err := audit.VerifyExport(bufio.NewReader(tmp), "", audit.VerifyOptions{})
			if err != nil {
				return err
			}
			if err := tmp.Chmod(0o644); err != nil {
				return err
			}
			if err := tmp.Sync(); err != nil {
				return err
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), out); err != nil {
				return err
			}
			if err := fsutil.SyncDir(filepath.Dir(out)); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "wrote %s: %s, %s\n", out, plural(rep.Entries, "entry", "entries"), plural(rep.Checkpoints, "signed checkpoint", "signed checkpoints"))
			if !rep.OK() {
				return fmt.Errorf("the exported log does not verify: %w", rep.Err())
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "the tar file to write")
	cmd.Flags().StringVar(&dataDir, "data", "", "export from a server's data directory (on the server machine)")
	cmd.Flags().StringVar(&catalogFlag, "catalog", "", "export from this postgres:// catalog, read-only (default with --data: $COFFER_CATALOG)")
	cmd.Flags().StringVar(&vkeyFlag, "verifier-key", "", "with --catalog without --data: the servers' audit verifier key (coffer-audit+…)")
	return cmd
}

// auditLog is a server's audit log opened for reading where it is
// stored.
type auditLog interface {
	audit.Store
	Close() error
}

// catalogURL is the PostgreSQL catalog the audit commands read: the one
// --catalog gives, else, with --data (on the server machine), the one
// COFFER_CATALOG gives, as coffer server reads it; "" for the SQLite
// catalog in the data directory.
func (a *app) auditCatalogURL(flag, dataDir string) (string, error) {
	u := flag
	if u == "" && dataDir != "" {
		u = a.getenv(server.CatalogEnv)
	}
	if u != "" && !postgres.IsURL(u) {
		return "", errors.New("--catalog: give the postgres:// URL the servers were given, or leave it out for the SQLite file in --data")
	}
	return u, nil
}

// openAuditLog opens the audit log of a server's catalog: the PostgreSQL
// catalog at catalogURL, read-only, else the SQLite file in dataDir. vkey
// is the verifier key of dataDir's audit/verifier.key, "" without
// dataDir: a PostgreSQL catalog does not hold it. name is what the
// verifying user's pins call the log: the catalog's location (without
// its user), the same for every server sharing it, or the data
// directory's name.
func openAuditLog(ctx context.Context, dataDir, catalogURL string) (log auditLog, vkey, name string, err error) {
	if dataDir != "" {
		vk, err := os.ReadFile(filepath.Join(dataDir, "audit", audit.VerifierKeyFile))
		if err != nil {
			return nil, "", "", fmt.Errorf("no audit log in %s: %w", dataDir, err)
		}
		vkey = strings.TrimSpace(string(vk))
	}
	if catalogURL != "" {
		loc, err := postgres.Location(catalogURL)
		if err != nil {
			return nil, "", "", err
		}
		cat, err := postgres.OpenReadOnly(ctx, catalogURL)
		if err != nil {
			return nil, "", "", err
		}
		return cat, vkey, "catalog-" + pinFileName(loc), nil
	}
	if _, err := os.Stat(filepath.Join(dataDir, "catalog.db")); err != nil {
		return nil, "", "", fmt.Errorf("no vault server catalog in %s (a server on PostgreSQL: give --catalog, or set %s as for the server): %w", dataDir, server.CatalogEnv, err)
	}
	cat, err := sqlite.Open(filepath.Join(dataDir, "catalog.db"))
	if err != nil {
		return nil, "", "", err
	}
	return cat, vkey, "local-" + filepath.Base(dataDir), nil
}

// pinFileName is s with every byte but letters, digits, '.', '_' and '-'
// replaced by '_', for a file name.
func pinFileName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-':
			return r
		}
		return '_'
	}, s)
}

func newAuditVerifyCmd(a *app) *cobra.Command {
	var export, dataDir, catalogFlag, vkey, report string
	var jsonOut, acceptNew bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Recompute the audit log's tree and check every signed checkpoint",
		Long: `Verify the audit log: every entry's hash, the Merkle tree, every checkpoint's
signature and that each is consistent with the entries. Four ways:

  --export FILE      an exported archive, offline, with nothing else; give the
                     server's --verifier-key to check it came from that server
  --vault URL        download the log from a server and verify it here
  --data DIR         on the server machine, straight from its catalog (also
                     checks the stored tree hashes); with COFFER_CATALOG set, as
                     for the server, from its PostgreSQL catalog
  --catalog URL      straight from the PostgreSQL catalog servers share,
                     read-only (SELECT on the audit tables is enough); give the
                     servers' --verifier-key the first time (it is pinned), or
                     --data DIR on a server; the password from ~/.pgpass or
                     PGPASSWORD rather than the URL

With --report FILE it checks a saved posture report (coffer posture --format
json) instead, offline: the signature by the server's audit key over the
report's canonical form, so that any changed, added or removed field fails.
The key is the one given with --verifier-key, else the one pinned for the
server --vault names by an earlier coffer audit verify --vault; never the one
the report names (anyone can write a report that names a key of their own).

A rollback (entries removed together with their checkpoints) cannot be seen
inside the log: it is detected against the newest checkpoint an earlier verify
of the same server saw, which is kept in $COFFER_HOME/audit/ with the server's
verifier key (pinned on first use). A log signed by another key than the pinned
one fails: a replaced key can hide a rewritten log. If the server's audit key
was rotated on purpose, confirm the new key with its operator out of band and
verify once with --accept-new-key: the log must still extend the checkpoint
verified before, and the new key is pinned. Exit 1 when anything does not
verify.`,
		Example: `  coffer audit verify --vault https://backup.example.com:8443
  coffer audit verify --export evidence.tar --verifier-key 'coffer-audit+…'
  coffer audit verify --data /var/lib/coffer
  coffer audit verify --catalog postgres://auditor@db.example.com/coffer --verifier-key 'coffer-audit+…'
  coffer audit verify --vault https://backup.example.com:8443 --report report.json
  coffer audit verify --report report.json --verifier-key 'coffer-audit+…'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var rep *audit.Report
			var err error
			var pin *pinned
			if report != "" {
				if export != "" || dataDir != "" || catalogFlag != "" || acceptNew {
					return errors.New("--report checks a posture report alone: give it without --export, --data, --catalog or --accept-new-key")
				}
				return a.verifyPostureReport(report, vkey, jsonOut)
			}
			if export != "" && (dataDir != "" || catalogFlag != "") {
				return errors.New("--export checks an archive alone: give it without --data or --catalog")
			}
			catalogURL, err := a.auditCatalogURL(catalogFlag, dataDir)
			if err != nil {
				return err
			}
			switch {
			case export != "":
				f, ferr := os.Open(export)
				if ferr != nil {
					return ferr
				}
				defer f.Close()
				if acceptNew {
					return errors.New("--accept-new-key is for --vault, --data and --catalog, whose verifier key is pinned; --export checks with the --verifier-key you give")
				}
				rep, err = audit.VerifyExport(f, vkey, audit.VerifyOptions{})
			case dataDir != "" || catalogURL != "":
				cat, k, name, oerr := openAuditLog(ctx, dataDir, catalogURL)
				if oerr != nil {
					return oerr
				}
				defer cat.Close()
				if vkey != "" && k != "" && vkey != k {
					return errors.New("--verifier-key differs from the server's audit/verifier.key")
				}
				if pin, err = a.loadPin(name); err != nil {
					return err
				}
				// The key the log must verify with: the data directory's,
				// else the one given, else the pinned one. SECURITY: never
				// one read from the catalog, which whoever can write the
				// database could have replaced along with the log.
				switch {
				case k != "":
				case vkey != "":
					k = vkey
				case pin.VerifierKey != "":
					k = pin.VerifierKey
				default:
					return fmt.Errorf("give the servers' audit verifier key with --verifier-key (the line in DATA/audit/%s on any server sharing the catalog, confirmed with its operator), or --data DIR on a server: the catalog does not hold it, and it is pinned for later runs", audit.VerifierKeyFile)
				}
				opts, perr := pin.options(k, acceptNew)
				if perr != nil {
					return perr
				}
				opts.Now = a.now()
				rep, err = audit.Verify(ctx, cat, k, opts)
				pin.use(k)
			default:
				c, _, cerr := a.serverClient()
				if cerr != nil {
					return cerr
				}
				defer c.Close()
				// The archive goes to a temporary file, never to memory.
				tmp, terr := os.CreateTemp("", "coffer-audit-*.tar")
				if terr != nil {
					return terr
				}
				defer os.Remove(tmp.Name())
				defer tmp.Close()
				if err := c.AuditExport(ctx, tmp); err != nil {
					return err
				}
				host := strings.NewReplacer(":", "_", "/", "_").Replace(strings.TrimPrefix(strings.TrimPrefix(a.serverURL(), "https://"), "http://"))
				if pin, err = a.loadPin(host); err != nil {
					return err
				}
				// The key the log must verify with: the one given, else the
				// one the server's archive carries; either must be the
				// pinned key (or an accepted rotation of it).
				k := vkey
				if k == "" {
					if k, err = exportVerifierKey(tmp); err != nil {
						return err
					}
				}
				opts, perr := pin.options(k, acceptNew)
				if perr != nil {
					return perr
				}
				if _, err := tmp.Seek(0, io.SeekStart); err != nil {
					return err
				}
				rep, err = audit.VerifyExport(bufio.NewReader(tmp), k, opts)
				pin.use(k)
			}
			if err != nil {
				return err
			}
			if jsonOut {
				if err := a.printJSON(reportJSON(rep)); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(a.stdout, rep.String())
			}
			if !rep.OK() {
				return fmt.Errorf("the audit log does not verify: %w", rep.Err())
			}
			if pin != nil && pin.was != "" && pin.VerifierKey != pin.was {
				fmt.Fprintf(a.stderr, "the new verifier key %s (key hash %s) is accepted and pinned, replacing %s (key hash %s)\n",
					pin.VerifierKey, keyHash(pin.VerifierKey), pin.was, keyHash(pin.was))
			}
			if pin != nil && (rep.Latest != nil || pin.VerifierKey != pin.was) {
				if rep.Latest != nil {
					pin.Checkpoint = rep.Latest
				}
				if err := pin.save(); err != nil {
					fmt.Fprintf(a.stderr, "warning: could not keep the verified checkpoint: %v\n", err)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&export, "export", "", "verify this exported archive, offline")
	cmd.Flags().StringVar(&report, "report", "", "verify this posture report's signature (coffer posture --format json), offline")
	cmd.Flags().StringVar(&dataDir, "data", "", "verify a server's log from its data directory (on the server machine)")
	cmd.Flags().StringVar(&catalogFlag, "catalog", "", "verify the log in this postgres:// catalog, read-only (default with --data: $COFFER_CATALOG)")
	cmd.Flags().StringVar(&vkey, "verifier-key", "", "the server's audit verifier key (coffer-audit+…); default: pinned on first verify")
	cmd.Flags().BoolVar(&acceptNew, "accept-new-key", false, "accept a verifier key other than the pinned one (a rotation you confirmed out of band), and pin it")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

// verifyPostureReport checks the signature of the posture report in
// file with the verifier key given, else the one pinned for --vault's
// server. SECURITY: the key is never taken from the report itself.
func (a *app) verifyPostureReport(file, vkey string, jsonOut bool) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, posture.MaxReport+1))
	if err != nil {
		return err
	}
	key := vkey
	if isRemote(a.vaultRef) {
		host := strings.NewReplacer(":", "_", "/", "_").Replace(strings.TrimPrefix(strings.TrimPrefix(a.serverURL(), "https://"), "http://"))
		pin, err := a.loadPin(host)
		if err != nil {
			return err
		}
		switch {
		case pin.VerifierKey == "" && key == "":
			return fmt.Errorf("no verifier key is pinned for %s: run coffer audit verify --vault %s first (it pins the server's key), or give --verifier-key", a.serverURL(), a.serverURL())
		case key == "":
			key = pin.VerifierKey
		case pin.VerifierKey != "" && pin.VerifierKey != key:
			return fmt.Errorf("--verifier-key (key hash %s) differs from the key pinned for %s (key hash %s): a report signed by another key is not that server's", keyHash(key), a.serverURL(), keyHash(pin.VerifierKey))
		}
	}
	if key == "" {
		return errors.New("give the server's --verifier-key (coffer-audit+…), or --vault naming a server whose key an earlier coffer audit verify pinned")
	}
	rep, err := posture.Verify(b, key)
	if err != nil {
		return fmt.Errorf("the posture report does not verify: %w", err)
	}
	if jsonOut {
		names := []string{}
		for _, v := range rep.Vaults {
			names = append(names, v.Name)
		}
		return a.printJSON(map[string]any{"ok": true, "key_hash": keyHash(key), "generated": rep.Generated, "vaults": names, "status": rep.Worst()})
	}
	for _, v := range rep.Vaults {
		fmt.Fprintf(a.stdout, "posture report of vault %s, generated %s, status %s: signature verifies (audit key hash %s)\n",
			safeText(v.Name), rep.Generated.UTC().Format(time.RFC3339), strings.ToUpper(string(v.Status)), keyHash(key))
	}
	return nil
}

// serverURL is the server part of --vault.
func (a *app) serverURL() string {
	ref := a.vaultRef
	u, err := url.Parse(ref)
	if err != nil {
		return ref
	}
	return u.Scheme + "://" + u.Host
}

func reportJSON(r *audit.Report) map[string]any {
	problems := []string{}
	for _, p := range r.Problems {
		problems = append(problems, p.String())
	}
	out := map[string]any{"ok": r.OK(), "entries": r.Entries, "checkpoints": r.Checkpoints, "unsigned": r.Unproven,
		"trusted_checkpoint_ok": r.TrustedOK, "notes": r.Notes, "problems": problems}
	if r.Latest != nil {
		out["latest_checkpoint_size"] = r.Latest.Size
	}
	return out
}

// exportVerifierKey reads the verifier key an export archive carries
// (its second file).
func exportVerifierKey(f io.ReadSeeker) (string, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	tr := tar.NewReader(bufio.NewReader(f))
	for range 2 {
		h, err := tr.Next()
		if err != nil {
			return "", fmt.Errorf("the server's answer is not an audit export: %w", err)
		}
		if h.Name == audit.ExportVerifierKeyPath {
			b, err := io.ReadAll(io.LimitReader(tr, 4096))
			if err != nil {
				return "", fmt.Errorf("the server's audit export: %w", err)
			}
			return strings.TrimSpace(string(b)), nil
		}
	}
	return "", errors.New("the server's answer is not an audit export: it holds no verifier key")
}

// pinned is what an earlier verify of a server's log saw: its verifier key
// and its newest checkpoint. A later verify must find a log that extends
// that checkpoint (else the log was rolled back) and signed by that key.
type pinned struct {
	path        string
	was         string            // VerifierKey as loaded
	VerifierKey string            `json:"verifier_key"`
	Checkpoint  *audit.Checkpoint `json:"checkpoint,omitempty"`
	// Previous are the keys the auditor accepted a rotation from: the
	// log's older checkpoints are signed by them.
	Previous []string `json:"previous_keys,omitempty"`
}

// options are the verify options for a log presented with verifier key
// vkey. SECURITY: a key other than the pinned one is refused unless the
// auditor accepts it (acceptNew): a new key is how a replaced or
// rewritten log would present itself. Accepted, the pinned checkpoint is
// still checked, under the previous key: a rotation does not license a
// log that does not extend what was verified before.
func (p *pinned) options(vkey string, acceptNew bool) (audit.VerifyOptions, error) {
	if p.VerifierKey == "" || p.VerifierKey == vkey {
		return audit.VerifyOptions{Trusted: p.Checkpoint, PreviousKeys: p.Previous}, nil
	}
	if !acceptNew {
		return audit.VerifyOptions{}, fmt.Errorf("the audit log's verifier key changed: %s pins %s (key hash %s), but the log is signed with %s (key hash %s). "+
			"A new key can hide a replaced or rewritten log. If the server's audit key was rotated on purpose, confirm the new key with its operator out of band, "+
			"then run again with --accept-new-key (the log must still extend the checkpoint verified before)",
			p.path, p.VerifierKey, keyHash(p.VerifierKey), vkey, keyHash(vkey))
	}
	return audit.VerifyOptions{Trusted: p.Checkpoint, PreviousKeys: append(slices.Clone(p.Previous), p.VerifierKey)}, nil
}

// use records vkey as the key to pin once the log verified; a replaced
// key joins the previous ones.
func (p *pinned) use(vkey string) {
	if p.VerifierKey != "" && p.VerifierKey != vkey && !slices.Contains(p.Previous, p.VerifierKey) {
		p.Previous = append(p.Previous, p.VerifierKey)
	}
	p.VerifierKey = vkey
}

// keyHash is the key hash field of a note verifier key
// (NAME+HASH+KEY), which identifies it.
func keyHash(vkey string) string {
	f := strings.SplitN(vkey, "+", 3)
	if len(f) < 3 {
		return "?"
	}
	return f[1]
}

func (a *app) loadPin(name string) (*pinned, error) {
	home, err := a.cofferHome()
	if err != nil {
		return nil, err
	}
	p := &pinned{path: filepath.Join(home, "audit", name+".json")}
	b, err := os.ReadFile(p.path)
	if errors.Is(err, fs.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, p); err != nil {
		return nil, fmt.Errorf("%s: %w", p.path, err)
	}
	p.was = p.VerifierKey
	return p, nil
}

func (p *pinned) save() error {
	if err := os.MkdirAll(filepath.Dir(p.path), 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(p, "", "  ")
	return fsutil.WriteFileSync(p.path, b, 0o600)
}
