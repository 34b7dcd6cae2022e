package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/client"
	"github.com/coffer-backup/coffer/internal/srcvol"
	"github.com/coffer-backup/coffer/internal/tlsconf"
	"github.com/coffer-backup/coffer/internal/vault"
)

// vaultSources lists each source of v with its newest snapshot and report
// (engine.Sources locally, GET …/sources on a server).
func vaultSources(ctx context.Context, v conn) ([]api.SourceReport, error) {
	switch x := v.(type) {
	case *openedVault:
		states, err := x.Vault.Sources(ctx, nil)
		if err != nil {
			return nil, err
		}
		out := make([]api.SourceReport, 0, len(states))
		for _, st := range states {
			out = append(out, api.NewSourceReport(st.Host, st.Last, st.Report, st.Writer))
		}
		return out, nil
	case *remoteVault:
		return x.Vault.Sources(ctx)
	}
	return nil, fmt.Errorf("this vault cannot list its sources")
}

func newSourceListCmd(a *app) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List each source of a vault: its last backup and the encryption of its volumes",
		Long: `List each source (host) of the vault: when the vault recorded its newest
snapshot, and the newest report its snapshots carry about the machine: for
each backed-up path, the volume it lives on and whether that volume is
encrypted at rest (LUKS/dm-crypt, fscrypt, eCryptfs, ZFS…), "unencrypted",
or "unknown" with the reason. coffer backup sends this report with every
snapshot; it is the agent's own claim about its machine, bound to the
snapshot's host, writer and time, which the vault proves.

Works on a local vault and on a server (vault.read: backup-reader and above;
a source's token in a vault with dedup scope "source" sees only its own).`,
		Example: `  coffer source list
  coffer source list --vault https://backup.example.com:8443/prod --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			v, err := a.open(ctx, false)
			if err != nil {
				return err
			}
			defer v.Close()
			srcs, err := vaultSources(ctx, v)
			if err != nil {
				return err
			}
			if jsonOut {
				return a.printJSON(srcs)
			}
			if len(srcs) == 0 {
				fmt.Fprintln(a.stdout, "no sources: the vault holds no live snapshot")
				return nil
			}
			for _, s := range srcs {
				a.printSource(s)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON (api.SourceReport, docs/openapi.yaml)")
	return cmd
}

// printSource prints one source; every string in it is the agent's and
// goes through the escaping of a.stdout.
func (a *app) printSource(s api.SourceReport) {
	fmt.Fprintf(a.stdout, "%s: last backup %s (snapshot %s)\n", safeText(s.Host), s.LastTime.UTC().Format(time.RFC3339), shortHex(s.LastSnapshot))
	if s.Source == nil {
		fmt.Fprintln(a.stdout, "  no report: its newest snapshots carry none (made by an older coffer, or backups from stdin)")
		return
	}
	from := ""
	if s.ReportSnapshot != s.LastSnapshot && s.ReportTime != nil {
		from = fmt.Sprintf(" from snapshot %s of %s", shortHex(s.ReportSnapshot), s.ReportTime.UTC().Format(time.RFC3339))
	}
	by := ""
	if s.Writer != "" {
		by = ", recorded by " + safeText(s.Writer)
	}
	fmt.Fprintf(a.stdout, "  report%s%s\n", from, by)
	if c := s.CopiedFrom; c != nil {
		fmt.Fprintf(a.stdout, "  copied from vault %s (snapshot %s): the original machine's report, as the copier passed it on\n", shortHex(c.Vault), shortHex(c.Snapshot))
	}
	for _, v := range s.Source.Volumes {
		a.printVolume("  ", v)
	}
	if lc := s.Source.LocalCopies; lc != nil {
		enc := "NOT encrypted"
		if lc.Encrypted {
			enc = "encrypted " + safeText(lc.Cipher)
		}
		fmt.Fprintf(a.stdout, "  local copies: %d of %d kept, %s\n", lc.Held, lc.Keep, enc)
	}
}

func (a *app) printVolume(indent string, v api.SourceVolume) {
	state := v.Encryption
	if v.Method != "" {
		state += " (" + v.Method + ")"
	}
	where := ""
	if v.Mount != "" {
		where = " on " + v.Mount
	}
	if v.FSType != "" || v.Device != "" {
		where += fmt.Sprintf(" [%s %s]", v.FSType, v.Device)
	}
	fmt.Fprintf(a.stdout, "%s%s: %s%s\n", indent, safeText(v.Path), safeText(state), safeText(where))
	if v.Detail != "" {
		fmt.Fprintf(a.stdout, "%s    %s\n", indent, safeText(v.Detail))
	}
}

func shortHex(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// agentStatus is what coffer agent status --json prints.
type agentStatus struct {
	Host       string            `json:"host"`
	Vault      string            `json:"vault"`
	LastBackup *agentBackup      `json:"last_backup"`
	Paths      []agentPathStatus `json:"paths"`
	TLS        *agentTLS         `json:"tls,omitempty"`
}

type agentBackup struct {
	Snapshot string    `json:"snapshot"`
	Time     time.Time `json:"time"`
}

type agentPathStatus struct {
	Path string `json:"path"`
	// Volume is what this machine finds now (srcvol).
	Volume     api.SourceVolume `json:"volume"`
	LastBackup *agentBackup     `json:"last_backup"` // the newest snapshot that holds the path
}

type agentTLS struct {
	URL         string `json:"url"`
	MinVersion  string `json:"min_version"`
	CA          string `json:"ca"`
	Fingerprint string `json:"fingerprint,omitempty"`
	Proxy       string `json:"proxy"`
}

// maxStatusPaths bounds the paths agent status looks at.
const maxStatusPaths = 256

func newAgentCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "This machine as a source of backups",
	}
	var jsonOut bool
	var host string
	status := &cobra.Command{
		Use:   "status [PATH...]",
		Short: "Show this machine's backed-up paths, their volumes' encryption, the last backup and the TLS settings",
		Long: `Show this machine as a source of the vault: for each path it backs up (the
paths of this host's snapshots in the vault, and any PATH given), the volume
it lives on now and whether that volume is encrypted at rest, and the newest
snapshot that holds it; the host's last backup; and, for a vault server,
the TLS settings in use (URL, minimum TLS version, the CA trusted or the
certificate pinned, the proxy).

Encryption is read from this machine: the device-mapper chain on Linux
(LUKS1/LUKS2/plain dm-crypt, through LVM, md RAID and partitions), fscrypt
directories, eCryptfs, ZFS native encryption (with the zfs command), FUSE
crypt file systems (gocryptfs, CryFS, EncFS). Network, FUSE and memory file
systems, and anything it cannot read, are "unknown" with the reason. The
same report travels with each backup (coffer source list shows the vault's
copy).`,
		Example: `  coffer agent status
  coffer agent status /srv /home --json
  coffer agent status --vault https://backup.example.com:8443/prod --token @/etc/coffer/token`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if host == "" {
				h, err := a.thisHost()
				if err != nil {
					return err
				}
				host = h
			}
			v, err := a.open(ctx, false)
			if err != nil {
				return err
			}
			defer v.Close()
			st := agentStatus{Host: host, Paths: []agentPathStatus{}}
			switch x := v.(type) {
			case *openedVault:
				st.Vault = x.loc.dir
			case *remoteVault:
				st.Vault = x.url
				// An agent's snapshots are recorded under its name.
				if cmd.Flags().Changed("host") {
					break
				}
				if err := x.LoadDedup(ctx); err == nil && x.BoundHost() != "" {
					st.Host = x.BoundHost()
				}
				t, err := a.tlsStatus(x.url)
				if err != nil {
					return err
				}
				st.TLS = t
			}
			snaps, err := v.Snapshots(ctx)
			if err != nil {
				return err
			}
			var paths []string
			last := map[string]vault.SnapshotRecord{}
			for _, s := range snaps {
				if s.Host != st.Host {
					continue
				}
				if st.LastBackup == nil || !s.Time.Before(st.LastBackup.Time) {
					st.LastBackup = &agentBackup{Snapshot: s.ID.String(), Time: s.Time}
				}
				for _, p := range s.Paths {
					if l, ok := last[p]; !ok || !s.Time.Before(l.Time) {
						last[p] = s
					}
				}
			}
			for p := range last {
				paths = append(paths, p)
			}
			for _, p := range args {
				ap, err := filepath.Abs(p)
				if err != nil {
					return fmt.Errorf("path %q: %w", p, err)
				}
				paths = append(paths, ap)
			}
			sort.Strings(paths)
			paths = slices.Compact(paths)
			more := 0
			if len(paths) > maxStatusPaths {
				more, paths = len(paths)-maxStatusPaths, paths[:maxStatusPaths]
			}
			for _, p := range paths {
				ps := agentPathStatus{Path: p, Volume: api.SourceVolume(srcvol.Detect(ctx, p))}
				if s, ok := last[p]; ok {
					ps.LastBackup = &agentBackup{Snapshot: s.ID.String(), Time: s.Time}
				}
				st.Paths = append(st.Paths, ps)
			}
			if jsonOut {
				return a.printJSON(st)
			}
			a.printAgentStatus(st, more)
			return nil
		},
	}
	status.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	status.Flags().StringVar(&host, "host", "", "the host whose snapshots to look at (default: $COFFER_HOST, else this machine's; with an agent's token, the agent's name)")
	cmd.AddCommand(status)
	return cmd
}

func (a *app) printAgentStatus(st agentStatus, more int) {
	fmt.Fprintf(a.stdout, "host:    %s\nvault:   %s\n", safeText(st.Host), safeText(st.Vault))
	if st.LastBackup != nil {
		fmt.Fprintf(a.stdout, "last backup: %s (snapshot %s)\n", st.LastBackup.Time.UTC().Format(time.RFC3339), shortHex(st.LastBackup.Snapshot))
	} else {
		fmt.Fprintln(a.stdout, "last backup: none of this host in the vault")
	}
	if t := st.TLS; t != nil {
		fmt.Fprintf(a.stdout, "TLS:     %s, minimum %s, trusting %s", safeText(t.URL), t.MinVersion, safeText(t.CA))
		if t.Fingerprint != "" {
			fmt.Fprintf(a.stdout, ", certificate pinned to %s", safeText(t.Fingerprint))
		}
		fmt.Fprintf(a.stdout, ", proxy %s\n", safeText(t.Proxy))
	}
	if len(st.Paths) == 0 {
		fmt.Fprintln(a.stdout, "paths:   none (this host has no snapshot in the vault; name paths to check them)")
		return
	}
	fmt.Fprintln(a.stdout, "paths:")
	for _, p := range st.Paths {
		a.printVolume("  ", p.Volume)
		if p.LastBackup != nil {
			fmt.Fprintf(a.stdout, "      last backed up %s (snapshot %s)\n", p.LastBackup.Time.UTC().Format(time.RFC3339), shortHex(p.LastBackup.Snapshot))
		} else {
			fmt.Fprintln(a.stdout, "      not in any snapshot of this host")
		}
	}
	if more > 0 {
		fmt.Fprintf(a.stdout, "  (%d more paths not shown)\n", more)
	}
}

// tlsStatus describes the TLS settings this command uses for the server
// of vault URL ref.
func (a *app) tlsStatus(ref string) (*agentTLS, error) {
	server, _, err := client.SplitVaultURL(ref)
	if err != nil {
		return nil, err
	}
	o := a.tlsOptions()
	cfg, err := tlsconf.ClientConfig(o)
	if err != nil {
		return nil, err
	}
	t := &agentTLS{URL: server, MinVersion: tls.VersionName(cfg.MinVersion), CA: "the system's CAs", Proxy: "none (direct)"}
	if o.CAFile != "" {
		t.CA = "the system's CAs and " + o.CAFile
	}
	if o.Fingerprint != "" {
		t.Fingerprint = o.Fingerprint
		if o.CAFile == "" {
			t.CA = "the pinned certificate only"
		}
	}
	req, err := http.NewRequest(http.MethodGet, server, nil)
	if err != nil {
		return nil, err
	}
	p, err := a.proxyFunc()(req)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	if p != nil {
		if p.User != nil {
			p.User = nil // never print a proxy password
			t.Proxy = p.String() + " (with credentials)"
		} else {
			t.Proxy = p.String()
		}
	}
	return t, nil
}
