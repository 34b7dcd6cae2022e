package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"

	"golang.org/x/net/http/httpproxy"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/client"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/keys/platform"
	"github.com/coffer-backup/coffer/internal/tlsconf"
	"github.com/coffer-backup/coffer/internal/vault"
)

// conn is an open vault, local or on a server: the one contract every
// command uses. The local implementation is the engine in-process; the
// remote one is the HTTPS client.
type conn interface {
	agent.BackupRepo
	agent.RestoreRepo
	FindSnapshot(ctx context.Context, ref string) (vault.SnapshotRecord, error)
	// ForSnapshot reads snapshot s's trees and data in its dedup domain
	// (docs/format.md §1.3).
	ForSnapshot(ctx context.Context, s vault.SnapshotRecord) (agent.RestoreRepo, error)
	// CheckVault checks the vault; opt.Progress is ignored (progress is).
	CheckVault(ctx context.Context, opt engine.CheckOptions, progress func(engine.CheckProgress)) (*engine.CheckReport, error)
	Info(ctx context.Context) (vaultInfo, error)
	Close() error
}

// vaultInfo is what `vault show` prints.
type vaultInfo struct {
	api.VaultInfo
	Location string // directory or URL
	KeyFile  string // the platform key file, local vaults only
	KeyError string // why the key encryption key cannot be used ("" when it can)
}

// isRemote reports whether ref names a vault on a server.
func isRemote(ref string) bool {
	return strings.HasPrefix(ref, "https://") || strings.HasPrefix(ref, "http://")
}

// CheckVault runs Check on the local engine.
func (o *openedVault) CheckVault(ctx context.Context, opt engine.CheckOptions, progress func(engine.CheckProgress)) (*engine.CheckReport, error) {
	o.store.DropReadCache(opt.ReadData || !opt.Subset.IsZero())
	opt.Progress = progress
	return o.Check(ctx, opt)
}

// Info describes the local vault.
func (o *openedVault) Info(ctx context.Context) (vaultInfo, error) {
	ki := o.KeyInfo()
	vi := vaultInfo{Location: o.loc.dir, VaultInfo: api.VaultInfo{
		Name: o.loc.name, ID: o.Record().ID.String(), Created: o.Config().Created, Algorithm: ki.Algorithm,
		KeySource: ki.KeySource, KEKProvider: ki.KEK.Provider, KEKID: ki.KEK.KeyID, KEKVersion: ki.KEK.Version,
		WrapAlg: ki.WrapAlg, DEKVersion: ki.DEKVersion, DEKCount: ki.DEKCount, LastRotated: ki.LastRotated, KeyringGen: ki.KeyringGen,
	}}
	if o.keys != nil && ki.KEK.Provider == platform.Provider {
		vi.KeyFile = o.keys.Path()
	}
	snaps, err := o.Snapshots(ctx)
	if err != nil {
		return vi, err
	}
	vi.Snapshots = len(snaps)
	vi.Packs, vi.StoredBytes, err = o.catalog.PackTotals(ctx, o.Record().ID)
	return vi, err
}

// ForSnapshot returns the engine's view of s's dedup domain: the local
// CLI holds the root secret and derives any domain's keys.
func (o *openedVault) ForSnapshot(ctx context.Context, s vault.SnapshotRecord) (agent.RestoreRepo, error) {
	if s.Domain == "" {
		return o.Vault, nil
	}
	return o.InDomain(s.Domain)
}

// ForSnapshot returns the client's view of s's dedup domain.
func (r *remoteVault) ForSnapshot(ctx context.Context, s vault.SnapshotRecord) (agent.RestoreRepo, error) {
	return r.Vault.ForSnapshot(ctx, s)
}

// remoteVault is a vault on a server.
type remoteVault struct {
	*client.Vault
	c   *client.Client
	url string
}

func (r *remoteVault) CheckVault(ctx context.Context, opt engine.CheckOptions, progress func(engine.CheckProgress)) (*engine.CheckReport, error) {
	var fn func(api.CheckProgress)
	if progress != nil {
		fn = func(p api.CheckProgress) {
			progress(engine.CheckProgress{Phase: p.Phase, Done: p.Done, Total: p.Total, Bytes: p.Bytes, Current: p.Current})
		}
	}
	body := api.CheckRequest{ReadData: opt.ReadData}
	if !opt.Subset.IsZero() {
		body.ReadDataSubset = opt.Subset.String()
	}
	rep, err := r.CheckWith(ctx, body, fn)
	if err != nil {
		return nil, err
	}
	if !opt.Subset.IsZero() && rep.Subset != opt.Subset.String() {
		// An older server ignores the field and reads everything, or
		// nothing: say so rather than print a subset it did not read.
		return nil, fmt.Errorf("check: the server did not read the subset %s (it answered %q): it may be older than this coffer; run check --read-data instead", opt.Subset, rep.Subset)
	}
	out := &engine.CheckReport{Packs: rep.Packs, Blobs: rep.Blobs, Snapshots: rep.Snapshots, Trees: rep.Trees,
		BytesRead: rep.BytesRead, Subset: rep.Subset, PacksRead: rep.PacksRead, Errors: rep.Errors, Warnings: rep.Warnings, DamagedMore: rep.DamagedMore}
	for _, u := range rep.Damaged {
		// The server's IDs are parsed, not passed on as text.
		snap, err1 := vault.ParseID(u.Snapshot)
		blob, err2 := vault.ParseID(u.Blob)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("check: the server's report: %w", err)
		}
		out.Damaged = append(out.Damaged, engine.DamageUse{Snapshot: snap, Path: u.Path, Tree: u.Tree, Offset: u.Offset, End: u.End, Blob: blob})
	}
	return out, nil
}

func (r *remoteVault) Info(ctx context.Context) (vaultInfo, error) {
	vi, err := r.Vault.Info(ctx)
	return vaultInfo{VaultInfo: vi, Location: r.url, KeyError: vi.KeyError}, err
}

func (r *remoteVault) Close() error {
	r.c.Close()
	return nil
}

// remote flags and environment.
type remoteOpts struct {
	token       string
	cacert      string
	fingerprint string
	// limitUp, limitDown: --limit-upload, --limit-download (sizes per
	// second), defaults from COFFER_LIMIT_UPLOAD, COFFER_LIMIT_DOWNLOAD.
	limitUp, limitDown string
}

// limits parses --limit-upload and --limit-download (bytes per second; 0
// or empty: none).
func (a *app) limits() (up, down int64, err error) {
	parse := func(flag, v, env string) (int64, error) {
		if v == "" {
			v = a.getenv(env)
		}
		if v == "" {
			return 0, nil
		}
		n, err := parseSize(strings.TrimSuffix(strings.TrimSuffix(v, "/s"), "ps"))
		if err != nil {
			return 0, fmt.Errorf("--%s: %w (per second: 20M, 512K; default $%s)", flag, err, env)
		}
		if n > 1<<50 {
			return 0, fmt.Errorf("--%s %s: too large", flag, v)
		}
		return int64(n), nil
	}
	if up, err = parse("limit-upload", a.remote.limitUp, "COFFER_LIMIT_UPLOAD"); err != nil {
		return 0, 0, err
	}
	down, err = parse("limit-download", a.remote.limitDown, "COFFER_LIMIT_DOWNLOAD")
	return up, down, err
}

// tokenValue returns the token from --token or COFFER_TOKEN; a value
// starting with @ names a file holding it.
func (a *app) tokenValue() (string, error) {
	t := a.remote.token
	if t == "" {
		t = a.getenv("COFFER_TOKEN")
	}
	if rest, ok := strings.CutPrefix(t, "@"); ok {
		b, err := os.ReadFile(rest)
		if err != nil {
			return "", fmt.Errorf("read token file: %w", err)
		}
		t = strings.TrimSpace(string(b))
	}
	return t, nil
}

// tlsOptions is whom the client trusts: --cacert and --fingerprint, or
// their environment variables.
func (a *app) tlsOptions() tlsconf.ClientOptions {
	o := tlsconf.ClientOptions{CAFile: a.remote.cacert, Fingerprint: a.remote.fingerprint}
	if o.CAFile == "" {
		o.CAFile = a.getenv("COFFER_CACERT")
	}
	if o.Fingerprint == "" {
		o.Fingerprint = a.getenv("COFFER_FINGERPRINT")
	}
	return o
}

// proxyFunc picks the proxy for a request from HTTPS_PROXY and NO_PROXY
// (or their lower-case forms) in the app's environment. As usual for
// these variables, loopback addresses are never proxied.
func (a *app) proxyFunc() func(*http.Request) (*url.URL, error) {
	env := func(k string) string {
		if v := a.getenv(k); v != "" {
			return v
		}
		return a.getenv(strings.ToLower(k))
	}
	f := (&httpproxy.Config{HTTPSProxy: env("HTTPS_PROXY"), NoProxy: env("NO_PROXY")}).ProxyFunc()
	return func(r *http.Request) (*url.URL, error) { return f(r.URL) }
}

// newClient makes an HTTPS client for server (https://host:port).
func (a *app) newClient(server string) (*client.Client, error) {
	cfg, err := tlsconf.ClientConfig(a.tlsOptions())
	if err != nil {
		return nil, err
	}
	tok, err := a.tokenValue()
	if err != nil {
		return nil, err
	}
	if tok == "" {
		// The token coffer login --save kept for this server, and only it.
		if tok, err = a.loadToken(server); err != nil {
			return nil, err
		}
	}
	if tok == "" {
		return nil, fmt.Errorf("vault server %s: give a token with --token or COFFER_TOKEN, or run coffer login NAME --save", server)
	}
	up, down, err := a.limits()
	if err != nil {
		return nil, err
	}
	return client.New(client.Options{Server: server, Token: tok, TLS: cfg, Proxy: a.proxyFunc(), LimitUpload: up, LimitDownload: down})
}

// openRemote opens vault URL ref (https://host:port/NAME).
func (a *app) openRemote(ctx context.Context, ref string) (*remoteVault, error) {
	server, name, err := client.SplitVaultURL(ref)
	if err != nil {
		return nil, err
	}
	if name == "" {
		return nil, fmt.Errorf("vault URL %q names no vault: want https://host:port/VAULT", ref)
	}
	c, err := a.newClient(server)
	if err != nil {
		return nil, err
	}
	return &remoteVault{Vault: c.Vault(name), c: c, url: ref}, nil
}

// open opens the selected vault, local or remote. create applies to local
// vaults only (a remote vault is made with `coffer vault create`).
func (a *app) open(ctx context.Context, create bool) (conn, error) {
	if isRemote(a.vaultRef) {
		return a.openRemote(ctx, a.vaultRef)
	}
	return a.openVault(ctx, create)
}
