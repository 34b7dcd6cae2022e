package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/fsutil"
	"github.com/coffer-backup/coffer/internal/keys/platform"
	"github.com/coffer-backup/coffer/internal/posture"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/vault"
)

// unsignedLocal is why a local vault's report is not signed.
const unsignedLocal = "a local vault is opened in-process by whoever holds its files: there is no server, and so no audit key, to vouch for what this report says (anyone with the files could write one). Serve the vault from coffer server for a signed report."

func newPostureCmd(a *app) *cobra.Command {
	var format, out, since string
	cmd := &cobra.Command{
		Use:   "posture",
		Short: "Report the vault's compliance posture: encryption, keys, TLS, sources, protection, backups, audit",
		Long: `Check the vault's real configuration and state and report each check's
status (pass, warn, fail, n/a), the facts it read (each with where and when it
was read), what to do about a failure, and the controls it supports (PCI DSS
v4.0, ISO/IEC 27001:2022, UK GDPR Art. 32, FCA SYSC and operational
resilience). docs/posture.md lists every check and the JSON schema.

On a vault server the server computes the report (it holds the keys' status,
the TLS certificate, the sources' reports, the check runs and the audit log)
and signs it with its audit key; verify a saved JSON report offline with
coffer audit verify --report FILE. The server keeps each day's posture, so
--since shows when each check changed state and how long each control has
held. Reading it needs the owner, key-officer or security-approver role.

A local vault's report is computed here from the vault itself; it is
unsigned (it says why) and has no history.

Formats: text (the terminal), json (the signed envelope, stable schema),
html (one self-contained page for an auditor, readable offline), md.
Exit 0 when the report was made, whatever its checks say.`,
		Example: `  coffer posture
  coffer posture --vault https://backup.example.com:8443/prod --since 90d
  coffer posture --vault https://backup.example.com:8443/prod --format html --out posture.html
  coffer posture --vault https://backup.example.com:8443/prod --format json --out report.json
  coffer audit verify --vault https://backup.example.com:8443 --report report.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			switch format {
			case "text", "json", "html", "md":
			default:
				return fmt.Errorf("unknown --format %q: use text, json, html or md", format)
			}
			if _, err := server.ParseSince(since); err != nil {
				return err
			}
			var env []byte
			var err error
			if isRemote(a.vaultRef) {
				r, oerr := a.openRemote(ctx, a.vaultRef)
				if oerr != nil {
					return oerr
				}
				defer r.Close()
				env, err = r.Vault.Posture(ctx, since)
			} else {
				env, err = a.localPosture(ctx)
			}
			if err != nil {
				return err
			}
			buf, rep, err := renderPosture(format, env)
			if err != nil {
				return err
			}
			if out != "" {
				if err := fsutil.WriteFileSync(out, buf, 0o600); err != nil {
					return fmt.Errorf("write report: %w", err)
				}
				fmt.Fprintf(a.stderr, "posture report (%s) written to %s: %s\n", format, out, strings.ToUpper(string(rep.Worst())))
				return nil
			}
			if format == "json" {
				_, err = a.jsonStdout.Write(buf)
				return err
			}
			_, err = a.stdout.Write(buf)
			return err
		},
	}
	cmd.Flags().StringVar(&format, "format", "text", "text, json, html or md")
	cmd.Flags().StringVar(&out, "out", "", "write the report to this file (mode 0600) instead of standard output")
	cmd.Flags().StringVar(&since, "since", "90d", "history window on a server: when each check changed state, how long each control has held (e.g. 30d, at most 400d)")
	return cmd
}

// renderPosture renders the report envelope env in format. The report
// may come from a hostile server: every value it holds is escaped for
// the format (text through safeText, HTML by html/template, Markdown by
// posture's escaper); JSON is the envelope as received.
func renderPosture(format string, env []byte) ([]byte, *posture.Report, error) {
	rep, _, err := posture.Open(env)
	if err != nil {
		return nil, nil, fmt.Errorf("the posture report: %w", err)
	}
	var buf bytes.Buffer
	switch format {
	case "json":
		buf.Write(env)
		if !bytes.HasSuffix(env, []byte("\n")) {
			buf.WriteByte('\n')
		}
	case "html":
		err = posture.WriteHTML(&buf, rep)
	case "md":
		err = posture.WriteMarkdown(&buf, rep)
	default:
		err = posture.WriteText(&buf, rep, safeText)
	}
	return buf.Bytes(), rep, err
}

// localPosture computes the selected local vault's report, unsigned.
func (a *app) localPosture(ctx context.Context) ([]byte, error) {
	loc, err := a.locate()
	if err != nil {
		return nil, err
	}
	now := a.now().UTC()
	pol := posture.Policy{}
	if d, err := a.kekRotation(); err == nil && d > 0 {
		pol.KEKMaxAge = d
	}
	f := posture.Facts{Now: now, Policy: pol, Mode: "local", ChecksSrc: "local vault (keeps no record of check runs)"}
	var rec vault.VaultRecord
	var ki engine.KeyInfo
	o, err := a.openVault(ctx, false)
	switch {
	case err == nil:
		defer o.Close()
		rec, ki = o.Record(), o.KeyInfo()
		if perr := o.ProbeKey(ctx); perr != nil {
			f.Key.ProbeErr = perr.Error()
		}
		f.SetRead = a.now().UTC()
		if st, serr := o.Settings(ctx); serr == nil {
			f.Settings = &st
		} else {
			f.SetErr = serr.Error()
		}
		snaps, serr := o.catalog.Snapshots(ctx, rec.ID)
		if serr != nil {
			return nil, serr
		}
		f.Sources = newestPerHost(snaps)
		f.SourcesRead = a.now().UTC()
	case errors.Is(err, vault.ErrKeyUnavailable) || errors.Is(err, vault.ErrWrongKey):
		vi, ierr := a.inspectLocal(ctx, err)
		if ierr != nil {
			return nil, errors.Join(err, ierr)
		}
		f.Key.ProbeErr = err.Error()
		f.SetRead, f.SetErr = now, "the vault's key is out of reach, so its settings cannot be authenticated"
		id, _ := vault.ParseID(vi.ID)
		rec = vault.VaultRecord{ID: id, Name: loc.name}
		ki = engine.KeyInfo{Algorithm: vi.Algorithm, KeySource: vi.KeySource, KEK: vault.KeyRef{Provider: vi.KEKProvider, KeyID: vi.KEKID, Version: vi.KEKVersion},
			WrapAlg: vi.WrapAlg, DEKVersion: vi.DEKVersion, DEKCount: vi.DEKCount, LastRotated: vi.LastRotated}
	default:
		return nil, err
	}
	f.Key = posture.KeyFacts{Algorithm: ki.Algorithm, KeySource: ki.KeySource, KEK: ki.KEK, WrapAlg: ki.WrapAlg,
		DEKVersion: ki.DEKVersion, DEKCount: ki.DEKCount, DEKCreated: ki.LastRotated, ProbeErr: f.Key.ProbeErr, Read: now}
	if ki.KEK.Provider == platform.Provider {
		if ks, kerr := platform.Open(loc.keyFile); kerr == nil {
			for _, v := range ks.Versions() {
				if strconv.Itoa(v.Version) == ki.KEK.Version {
					f.Key.KEKCreated = v.Created
				}
			}
		}
	}
	name := loc.name
	if name == "" {
		name = filepath.Base(loc.dir)
	}
	checks := posture.Run(f)
	r := &posture.Report{Generated: now, Mode: "local", Producer: "coffer CLI, local vault " + loc.dir, Policy: posture.ReportPolicy(pol),
		Vaults: []posture.Vault{posture.NewVault(name, rec.ID.String(), checks, nil, now)}, UnsignedReason: unsignedLocal}
	return posture.Seal(r, nil)
}

// newestPerHost is the newest live snapshot of each host, by host.
func newestPerHost(snaps []vault.SnapshotRecord) []posture.SourceFact {
	newest := map[string]vault.SnapshotRecord{}
	for _, sn := range snaps {
		if !sn.Deleted.IsZero() {
			continue
		}
		if cur, ok := newest[sn.Host]; !ok || sn.Time.After(cur.Time) {
			newest[sn.Host] = sn
		}
	}
	var out []posture.SourceFact
	for _, sn := range newest {
		out = append(out, posture.SourceFact{Host: sn.Host, Snapshot: sn.ID.String(), Time: sn.Time, Facts: sn.Source})
	}
	posture.SortSources(out)
	return out
}
