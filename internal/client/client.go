// Package client is the HTTPS client of the vault server. Vault implements
// the agent's vault contract (agent.BackupRepo and agent.RestoreRepo) over
// the API, so a backup or restore runs the same code in local and remote
// mode.
//
// Uploads are batched: SaveBlob copies each encoded blob into the batch
// being filled; a full batch asks the server which of its blobs are
// missing and uploads only those, several batches in flight. Trees go in
// batches of their own, each sent only once every batch before it has
// been stored: the server accepts a tree only when it holds everything
// the tree references, and the agent saves a tree after its children, so
// children always reach the server first. The agent
// never holds a data key: it gets the chunk-ID key and the chunker seed,
// sends encoded (compressed) blobs and verifies what it downloads.
package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/tlsconf"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Options configure a Client.
type Options struct {
	// Server is the server's base URL, https://host:port.
	Server string
	// Token is the bearer token.
	Token string
	// TLS is the client TLS configuration (tlsconf.ClientConfig).
	TLS *tls.Config
	// Proxy picks a proxy per request; http.ProxyFromEnvironment (HTTPS_PROXY,
	// NO_PROXY) when nil.
	Proxy func(*http.Request) (*url.URL, error)
	// BatchBytes is the size at which an upload batch is sent (default
	// 4 MiB), InFlight how many batches may be uploading (default 4).
	BatchBytes, InFlight int
	// LimitUpload and LimitDownload cap what the client sends and receives,
	// in bytes per second summed over its concurrent requests (request and
	// response bodies; headers and TLS are not counted). 0: no limit.
	LimitUpload, LimitDownload int64
}

// Client talks to one vault server.
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
	opt   Options
	// session names this client's writer session on the server (one
	// backup per client): the server registers it at the first upload
	// request, so that a prune waits for it (docs/retention.md).
	session string
}

// SplitVaultURL splits https://host:port/NAME into the server URL and the
// vault name.
func SplitVaultURL(s string) (server, name string, err error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", "", fmt.Errorf("vault URL %q: %w", s, err)
	}
	if u.Scheme != "https" {
		return "", "", fmt.Errorf("vault URL %q: only https:// is supported (coffer never talks to a vault in plaintext)", s)
	}
	if u.Host == "" {
		return "", "", fmt.Errorf("vault URL %q: no host", s)
	}
	name = strings.Trim(u.Path, "/")
	if strings.Contains(name, "/") {
		return "", "", fmt.Errorf("vault URL %q: want https://host:port/VAULT", s)
	}
	return "https://" + u.Host, name, nil
}

// New makes a client for opt.Server.
func New(opt Options) (*Client, error) {
	u, err := url.Parse(opt.Server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("server URL %q: want https://host:port", opt.Server)
	}
	if opt.TLS == nil {
		return nil, errors.New("client: TLS configuration required")
	}
	if opt.BatchBytes <= 0 {
		opt.BatchBytes = 4 << 20
	}
	if opt.InFlight <= 0 {
		opt.InFlight = 4
	}
	proxy := opt.Proxy
	if proxy == nil {
		proxy = http.ProxyFromEnvironment
	}
	tr := &http.Transport{
		Proxy:                 proxy,
		DialContext:           (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       opt.TLS.Clone(),
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 10 * time.Minute,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   32,
		// HTTP/1.1 on several connections, not HTTP/2 on one: Go's HTTP/2
		// moves every stream of a connection through one frame writer, and
		// bulk transfers of several MiB each ran faster spread over
		// connections (and cores): restore of the mixed set over loopback
		// 1.26 s against 1.75 s (docs/performance.md).
		ForceAttemptHTTP2: false,
	}
	// Upload batches are MiBs each: sent through a coalescing TLS
	// connection their records go to the kernel 16 at a time instead of
	// one by one (tlsconf.CoalescingDialer). Through a proxy the transport
	// does TLS itself, as before.
	if pu, err := proxy(&http.Request{URL: u}); err == nil && pu == nil {
		tr.DialTLSContext = tlsconf.CoalescingDialer(tr.DialContext, tr.TLSClientConfig, tr.TLSHandshakeTimeout)
	}
	var sid [16]byte
	rand.Read(sid[:])
	var rt http.RoundTripper = tr
	if up, down := newLimiter(opt.LimitUpload), newLimiter(opt.LimitDownload); up != nil || down != nil {
		rt = &limitTransport{next: tr, up: up, down: down}
	}
	hc := &http.Client{Transport: rt, CheckRedirect: refuseRedirect}
	return &Client{base: u, token: opt.Token, hc: hc, opt: opt, session: hex.EncodeToString(sid[:])}, nil
}

// ErrRedirect reports a server that answered with a redirect.
var ErrRedirect = errors.New("the server answered with a redirect")

// refuseRedirect is the client's CheckRedirect. SECURITY: a redirect is
// never followed: it is called before the next request is sent, so
// nothing, and no token (net/http keeps the Authorization header for
// the same host on any port, and would send it to http:// in
// plaintext), goes to the target. A vault server never redirects; one
// that does is misconfigured or not the server it claims to be.
func refuseRedirect(req *http.Request, via []*http.Request) error {
	return fmt.Errorf("%w to %s: coffer does not follow redirects (they could carry its token elsewhere); if the server has moved, use its new address", ErrRedirect, req.URL.Redacted())
}

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// do sends a request and returns the response when its status is 2xx; any
// other answer becomes the server's error.
func (c *Client) do(ctx context.Context, method, path string, body io.Reader, ctype string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, body)
	if err != nil {
		return nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	return c.send(req)
}

// retryable lists the requests that may be sent again after a network
// failure or an unavailable server: reads, and the writes that are
// idempotent (blobs are content-addressed and write-once; a flush of
// nothing is a no-op). Saving a snapshot, creating a vault or a token, and
// a check (which may have run for hours) are not repeated.
func retryable(req *http.Request) bool {
	if req.Method == http.MethodGet || req.Method == http.MethodHead {
		return true
	}
	if req.Method != http.MethodPost {
		return false
	}
	for _, suffix := range []string{"/missing", "/blobs", "/flush", "/read"} {
		if strings.HasSuffix(req.URL.Path, suffix) {
			return true
		}
	}
	return false
}

// retryDelays are the pauses before the second, third and fourth attempt.
var retryDelays = []time.Duration{250 * time.Millisecond, time.Second, 3 * time.Second}

// send adds the token, sends req and returns the response when its status
// is 2xx; any other answer becomes the server's error. A retryable request
// that fails on the network (not on TLS trust) or finds the server
// unavailable (503 "unavailable", or 502/504 from a proxy) is sent again
// up to three times.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set(api.HeaderSession, c.session)
	for attempt := 0; ; attempt++ {
		resp, err := c.send1(req)
		if err == nil || !retryable(req) || attempt == len(retryDelays) || !transient(err) || req.Context().Err() != nil {
			return resp, err
		}
		if req.Body != nil {
			if req.GetBody == nil {
				return resp, err
			}
			body, gerr := req.GetBody()
			if gerr != nil {
				return resp, err
			}
			req = req.Clone(req.Context())
			req.Body = body
		}
		select {
		case <-time.After(retryDelays[attempt]):
		case <-req.Context().Done():
			return nil, err
		}
	}
}

// permanent marks an error that trying again cannot fix (a TLS policy or
// trust failure).
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// transient reports whether err may go away by itself.
func transient(err error) bool {
	var p permanent
	if errors.As(err, &p) {
		return false
	}
	var re *api.RemoteError
	if errors.As(err, &re) {
		return re.Code == api.CodeUnavailable || re.Status == http.StatusBadGateway || re.Status == http.StatusGatewayTimeout
	}
	var ue *tlsconf.UntrustedError
	if errors.As(err, &ue) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED)
}

func (c *Client) send1(req *http.Request) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(err, ErrRedirect) {
			return nil, permanent{fmt.Errorf("%s %s: %w", req.Method, c.base.Host, errors.Unwrap(err))}
		}
		// A TLS failure says how to trust the server (--cacert,
		// --fingerprint) or why its TLS is refused.
		if xe := tlsconf.ExplainError(err); xe != err {
			return nil, permanent{xe}
		}
		return nil, fmt.Errorf("%s %s: %w", req.Method, c.base.Host, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, serverError(api.DecodeError(resp))
	}
	return resp, nil
}

// maxServerMessage bounds a server's error message as the client passes
// it on.
const maxServerMessage = 4 << 10

// serverError keeps the message of a server's error on one line and
// within maxServerMessage: it reaches the user's terminal, and a hostile
// server could forge lines of coffer's own output with newlines (the CLI
// escapes the other control characters of everything it prints).
func serverError(err error) error {
	var re *api.RemoteError
	if errors.As(err, &re) {
		m := strings.NewReplacer("\n", `\n`, "\r", `\r`).Replace(re.Message)
		if len(m) > maxServerMessage {
			m = strings.ToValidUTF8(m[:maxServerMessage], "") + "…"
		}
		re.Message = m
	}
	return err
}

// doJSON sends in (when not nil) as JSON and decodes the answer into out
// (when not nil).
func (c *Client) doJSON(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	ctype := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body, ctype = bytes.NewReader(b), "application/json"
	}
	resp, err := c.do(ctx, method, path, body, ctype)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJSONAnswer+1))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if len(b) > maxJSONAnswer {
		return fmt.Errorf("%s %s: bad answer: more than %d MiB", method, path, maxJSONAnswer>>20)
	}
	// SECURITY: decoding allocates per value, not per byte: "[{},{},…]"
	// would make 64 MiB into gigabytes of empty records. Count first.
	if objs, vals := countJSON(b); objs > maxJSONObjects || vals > maxJSONValues {
		return fmt.Errorf("%s %s: bad answer: %d objects, %d values (at most %d, %d)", method, path, objs, vals, maxJSONObjects, maxJSONValues)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: bad answer: %w", method, path, err)
	}
	return nil
}

// Bounds of a JSON answer: its size, and the objects and values in it
// (which is what decoding allocates for).
const (
	maxJSONAnswer  = 64 << 20
	maxJSONObjects = 1 << 20
	maxJSONValues  = 4 << 20
)

// countJSON counts the objects ('{') and the values (roughly: elements
// and members, one more per ',') of JSON text b, outside strings.
func countJSON(b []byte) (objects, values int) {
	in, esc := false, false
	for _, c := range b {
		switch {
		case in && esc:
			esc = false
		case in && c == '\\':
			esc = true
		case in && c == '"':
			in = false
		case in:
		case c == '"':
			in = true
		case c == '{':
			objects++
			values++
		case c == '[', c == ',':
			values++
		}
	}
	return objects, values
}

// CreateVault creates vault name on the server.
func (c *Client) CreateVault(ctx context.Context, name string) (api.VaultInfo, error) {
	return c.CreateVaultWith(ctx, api.CreateVault{Name: name})
}

// RecoverVault rebuilds the server's record of a vault from its store and
// key after the catalog was lost.
func (c *Client) RecoverVault(ctx context.Context, rv api.RecoverVault) (api.Recovered, error) {
	var out api.Recovered
	err := c.doJSON(ctx, http.MethodPost, "/v1/recover", rv, &out)
	return out, err
}

// CreateVaultWith creates a vault as cv says (a store of its own, …).
func (c *Client) CreateVaultWith(ctx context.Context, cv api.CreateVault) (api.VaultInfo, error) {
	var vi api.VaultInfo
	err := c.doJSON(ctx, http.MethodPost, "/v1/vaults", cv, &vi)
	return vi, err
}

// CreateToken issues a token; the answer's Secret is shown this once.
func (c *Client) CreateToken(ctx context.Context, t api.CreateToken) (api.Token, error) {
	var out api.Token
	err := c.doJSON(ctx, http.MethodPost, "/v1/tokens", t, &out)
	return out, err
}

// Tokens lists the server's tokens (never their secrets).
func (c *Client) Tokens(ctx context.Context) ([]api.Token, error) {
	var out []api.Token
	err := c.doJSON(ctx, http.MethodGet, "/v1/tokens", nil, &out)
	return out, err
}

// RevokeToken revokes token id.
// Revoking the last active owner token needs a security approver: the
// answer is then the request (nil otherwise).
func (c *Client) RevokeToken(ctx context.Context, id string) (*api.Request, error) {
	var out struct {
		Request *api.Request `json:"request"`
	}
	resp, err := c.do(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(id), nil, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusAccepted {
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
			return nil, fmt.Errorf("DELETE /v1/tokens/%s: bad answer: %w", id, err)
		}
		return out.Request, nil
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return nil, nil
}

// Healthz checks that the server answers.
func (c *Client) Healthz(ctx context.Context) error {
	resp, err := c.do(ctx, http.MethodGet, "/healthz", nil, "")
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Metrics returns the server's metrics text.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	resp, err := c.do(ctx, http.MethodGet, "/metrics", nil, "")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return string(b), err
}

type blobKey struct {
	t  vault.BlobType
	id vault.ID
}

// Vault is one vault on the server. It is safe for concurrent use.
type Vault struct {
	c     *Client
	name  string
	path  string // /v1/vaults/NAME
	codec *format.Codec

	dedupMu sync.Mutex
	dedup   *vault.DedupParams
	hasher  *format.IDHasher // nil until dedup is loaded
	host    string           // the host the server binds this token's snapshots to
	// hostSince: when that agent was created
	hostSince time.Time
	domain    string // the dedup domain of the loaded keys ("" vault-wide)

	mu       sync.Mutex
	known    map[blobKey]struct{} // blobs stored or queued this session
	cur      *batch               // data blobs
	curTree  *batch               // tree blobs
	order    sequence             // batches in the order they were closed
	sem      chan struct{}
	freeBufs chan []byte // batch buffers whose upload ended
	uploads  sync.WaitGroup
	firstErr error
	added    atomic.Uint64

	indexOnce sync.Once
	index     map[blobKey]uint32
	indexErr  error
}

// Vault returns the vault named name. Nothing is fetched yet.
func (c *Client) Vault(name string) *Vault {
	return &Vault{c: c, name: name, path: "/v1/vaults/" + url.PathEscape(name), codec: format.NewCodec(),
		known: map[blobKey]struct{}{}, sem: make(chan struct{}, c.opt.InFlight), freeBufs: make(chan []byte, c.opt.InFlight+1)}
}

// Name is the vault's name.
func (v *Vault) Name() string { return v.name }

// Info fetches the vault's description.
func (v *Vault) Info(ctx context.Context) (api.VaultInfo, error) {
	var vi api.VaultInfo
	err := v.c.doJSON(ctx, http.MethodGet, v.path, nil, &vi)
	return vi, err
}

// KeyStatus probes the vault's key encryption key on the server.
func (v *Vault) KeyStatus(ctx context.Context) (api.KeyStatus, error) {
	var out api.KeyStatus
	err := v.c.doJSON(ctx, http.MethodGet, v.path+"/key", nil, &out)
	return out, err
}

// KeyEvents lists the vault's key events, oldest first.
func (v *Vault) KeyEvents(ctx context.Context) ([]api.KeyEvent, error) {
	var out []api.KeyEvent
	err := v.c.doJSON(ctx, http.MethodGet, v.path+"/key/events", nil, &out)
	return out, err
}

// RotateKey starts a new data key.
func (v *Vault) RotateKey(ctx context.Context) (api.KeyChange, error) {
	var out api.KeyChange
	err := v.c.doJSON(ctx, http.MethodPost, v.path+"/key/rotate", nil, &out)
	return out, err
}

// UseCMK wraps the vault's keys with the customer key uri reaches (from
// the server). On a vault whose immutability is enabled or locked the
// answer is a request for a security approver (the returned
// *api.Request); nothing changes until it is approved.
func (v *Vault) UseCMK(ctx context.Context, uri string) (api.KeyChange, *api.Request, error) {
	var out struct {
		api.KeyChange
		Request *api.Request `json:"request"`
	}
	err := v.c.doJSON(ctx, http.MethodPost, v.path+"/key/use-cmk", api.UseCMK{URI: uri}, &out)
	return out.KeyChange, out.Request, err
}

// UsePMK asks to wrap the vault's keys with the server's platform key
// again. A vault on a customer key gets a request for a security approver
// (the returned *api.Request); nothing changes until it is approved.
func (v *Vault) UsePMK(ctx context.Context) (api.KeyChange, *api.Request, error) {
	var out struct {
		api.KeyChange
		Request *api.Request `json:"request"`
	}
	err := v.c.doJSON(ctx, http.MethodPost, v.path+"/key/use-pmk", nil, &out)
	return out.KeyChange, out.Request, err
}

// Delete asks to delete the vault: a critical change, so the answer is a
// request for a security approver.
func (v *Vault) Delete(ctx context.Context) (*api.Request, error) {
	var out struct {
		Request *api.Request `json:"request"`
	}
	err := v.c.doJSON(ctx, http.MethodDelete, v.path, nil, &out)
	return out.Request, err
}

// Deleted lists the vault's soft-deleted snapshots.
func (v *Vault) Deleted(ctx context.Context) ([]vault.SnapshotRecord, error) {
	var ws []api.Snapshot
	if err := v.c.doJSON(ctx, http.MethodGet, v.path+"/deleted", nil, &ws); err != nil {
		return nil, err
	}
	return recordsOf(ws)
}

func recordsOf(ws []api.Snapshot) ([]vault.SnapshotRecord, error) {
	out := make([]vault.SnapshotRecord, 0, len(ws))
	for _, w := range ws {
		r, err := w.Record()
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Forget soft-deletes snapshots; it returns them and until when they can
// be undeleted.
func (v *Vault) Forget(ctx context.Context, ids []vault.ID) ([]vault.SnapshotRecord, time.Time, error) {
	body := api.Forget{IDs: make([]string, len(ids))}
	for i, id := range ids {
		body.IDs[i] = id.String()
	}
	var out api.Forgotten
	if err := v.c.doJSON(ctx, http.MethodPost, v.path+"/forget", body, &out); err != nil {
		return nil, time.Time{}, err
	}
	recs, err := recordsOf(out.Forgotten)
	return recs, out.RecoverableUntil, err
}

// Undelete brings a soft-deleted snapshot back.
func (v *Vault) Undelete(ctx context.Context, id vault.ID) (vault.SnapshotRecord, error) {
	var out api.Snapshot
	if err := v.c.doJSON(ctx, http.MethodPost, v.path+"/undelete", api.Undelete{ID: id.String()}, &out); err != nil {
		return vault.SnapshotRecord{}, err
	}
	return out.Record()
}

// Retag replaces snapshot id by one with the changed tags (the server
// applies c to the tags it holds) and returns the new snapshot and the
// forgotten original.
func (v *Vault) Retag(ctx context.Context, id vault.ID, c api.Retag) (vault.SnapshotRecord, vault.SnapshotRecord, error) {
	c.ID = id.String()
	var out api.Replaced
	if err := v.c.doJSON(ctx, http.MethodPost, v.path+"/retag", c, &out); err != nil {
		return vault.SnapshotRecord{}, vault.SnapshotRecord{}, err
	}
	n, err := out.Snapshot.Record()
	if err != nil {
		return n, n, err
	}
	o, err := out.Original.Record()
	return n, o, err
}

// Rewrite replaces snapshot id by one without what patterns match (the
// server rewrites the trees) and returns the new snapshot and the
// forgotten original.
func (v *Vault) Rewrite(ctx context.Context, id vault.ID, patterns []api.ExcludePattern) (vault.SnapshotRecord, vault.SnapshotRecord, error) {
	var out api.Replaced
	if err := v.c.doJSON(ctx, http.MethodPost, v.path+"/rewrite", api.Rewrite{ID: id.String(), Patterns: patterns}, &out); err != nil {
		return vault.SnapshotRecord{}, vault.SnapshotRecord{}, err
	}
	n, err := out.Snapshot.Record()
	if err != nil {
		return n, n, err
	}
	o, err := out.Original.Record()
	return n, o, err
}

// Prune runs prune on the server.
func (v *Vault) Prune(ctx context.Context, dryRun bool) (api.PruneReport, error) {
	var out api.PruneReport
	err := v.c.doJSON(ctx, http.MethodPost, v.path+"/prune", api.Prune{DryRun: dryRun}, &out)
	return out, err
}

// RepairIndex rebuilds the vault's blob index from the packs in its
// store (on the server); with dryRun it only says what it would change.
func (v *Vault) RepairIndex(ctx context.Context, dryRun bool) (api.RepairIndexReport, error) {
	var out api.RepairIndexReport
	err := v.c.doJSON(ctx, http.MethodPost, v.path+"/repair/index", api.Repair{DryRun: dryRun}, &out)
	return out, err
}

// RepairSnapshots lists (dryRun) the snapshots that use lost data and
// what their repair drops; otherwise it asks to repair them, a critical
// change: the answer's Request waits for a security approver, and its
// Snapshots are what the approved repair will touch.
func (v *Vault) RepairSnapshots(ctx context.Context, dryRun bool) (api.RepairSnapshotsReport, error) {
	var out api.RepairSnapshotsReport
	err := v.c.doJSON(ctx, http.MethodPost, v.path+"/repair/snapshots", api.Repair{DryRun: dryRun}, &out)
	return out, err
}

// Settings fetches the vault's deletion-protection settings.
func (v *Vault) Settings(ctx context.Context) (api.Settings, error) {
	var out api.Settings
	err := v.c.doJSON(ctx, http.MethodGet, v.path+"/settings", nil, &out)
	return out, err
}

// ChangeSettings asks for a settings change: applied, or (critical) a
// request for a security approver in the result's Request.
func (v *Vault) ChangeSettings(ctx context.Context, c api.SettingsChange) (api.SettingsResult, error) {
	var out api.SettingsResult
	err := v.c.doJSON(ctx, http.MethodPost, v.path+"/settings", c, &out)
	return out, err
}

// Events lists the vault's deletion and protection events.
func (v *Vault) Events(ctx context.Context) ([]api.VaultEvent, error) {
	var out []api.VaultEvent
	err := v.c.doJSON(ctx, http.MethodGet, v.path+"/events", nil, &out)
	return out, err
}

// Requests lists multi-user authorization requests: pending ones, or all
// with all; of one vault when vaultName is set.
func (c *Client) Requests(ctx context.Context, vaultName string, all bool) ([]api.Request, error) {
	q := url.Values{}
	if vaultName != "" {
		q.Set("vault", vaultName)
	}
	if all {
		q.Set("all", "true")
	}
	path := "/v1/requests"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out []api.Request
	err := c.doJSON(ctx, http.MethodGet, path, nil, &out)
	return out, err
}

// Decide approves (approve true) or rejects request id.
func (c *Client) Decide(ctx context.Context, id string, approve bool) (api.Request, error) {
	verb := "reject"
	if approve {
		verb = "approve"
	}
	var out api.Request
	err := c.doJSON(ctx, http.MethodPost, "/v1/requests/"+url.PathEscape(id)+"/"+verb, nil, &out)
	return out, err
}

// LoadDedup fetches the chunk-ID key and chunker parameters (needs the
// backup permission). Afterwards Dedup returns them and downloads are
// verified against their IDs.
func (v *Vault) LoadDedup(ctx context.Context) error {
	v.dedupMu.Lock()
	defer v.dedupMu.Unlock()
	if v.dedup != nil {
		return nil
	}
	var d api.Dedup
	if err := v.c.doJSON(ctx, http.MethodGet, v.path+"/dedup", nil, &d); err != nil {
		return err
	}
	if len(d.ChunkIDKey) != seal.KeySize || len(d.GearSeed) != seal.KeySize {
		return fmt.Errorf("vault %s: dedup parameters: %w: key sizes %d/%d", v.name, vault.ErrCorrupt, len(d.ChunkIDKey), len(d.GearSeed))
	}
	p := &vault.DedupParams{Chunker: vault.ChunkerParams{Min: d.Min, Avg: d.Avg, Max: d.Max}}
	copy(p.ChunkIDKey[:], d.ChunkIDKey)
	copy(p.GearSeed[:], d.GearSeed)
	if err := format.CheckDomain(d.Domain); err != nil {
		return fmt.Errorf("vault %s: dedup parameters: %w: %v", v.name, vault.ErrCorrupt, err)
	}
	v.dedup = p
	v.hasher = format.NewIDHasher(p.ChunkIDKey)
	v.host, v.hostSince = d.Host, d.HostSince
	v.domain = d.Domain
	return nil
}

// BoundHostSince is when the agent BoundHost names was created (zero
// for other tokens): older snapshots of its host are never its parent.
func (v *Vault) BoundHostSince() time.Time {
	v.dedupMu.Lock()
	defer v.dedupMu.Unlock()
	return v.hostSince
}

// domainHasher fetches the ID hasher of dedup domain d (GET …/dedup?domain=),
// for verifying what is read of a snapshot of that domain; nil when the
// token may not have the domain's keys (it then relies on the server's
// checks, as a token without backup rights always did).
func (v *Vault) domainHasher(ctx context.Context, d string) (*format.IDHasher, error) {
	v.dedupMu.Lock()
	if v.hasher != nil && v.domain == d {
		h := v.hasher.Clone()
		v.dedupMu.Unlock()
		return h, nil
	}
	v.dedupMu.Unlock()
	var out api.Dedup
	err := v.c.doJSON(ctx, http.MethodGet, v.path+"/dedup?domain="+url.QueryEscape(d), nil, &out)
	if errors.Is(err, api.ErrForbidden) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(out.ChunkIDKey) != seal.KeySize || out.Domain != d {
		return nil, fmt.Errorf("vault %s: dedup parameters of domain %s: %w: the server answered with another domain or key size", v.name, d, vault.ErrCorrupt)
	}
	var k seal.Key
	copy(k[:], out.ChunkIDKey)
	return format.NewIDHasher(k), nil
}

// readQuery is the query string naming dedup domain d on a read ("" for
// the vault-wide domain).
func readQuery(d string) string {
	if d == "" {
		return ""
	}
	return "?domain=" + url.QueryEscape(d)
}

// Domain is the dedup domain of the keys LoadDedup fetched ("" for the
// vault-wide one).
func (v *Vault) Domain() string {
	v.dedupMu.Lock()
	defer v.dedupMu.Unlock()
	return v.domain
}

// BoundHost is the host the server records this token's snapshots under
// (an agent's name), as LoadDedup learnt it; "" when the server takes the
// host the client names.
func (v *Vault) BoundHost() string {
	v.dedupMu.Lock()
	defer v.dedupMu.Unlock()
	return v.host
}

// Dedup returns what LoadDedup fetched (zero before).
func (v *Vault) Dedup() vault.DedupParams {
	v.dedupMu.Lock()
	defer v.dedupMu.Unlock()
	if v.dedup == nil {
		return vault.DedupParams{}
	}
	return *v.dedup
}

func (v *Vault) newHasher() *format.IDHasher {
	v.dedupMu.Lock()
	defer v.dedupMu.Unlock()
	if v.hasher == nil {
		return nil
	}
	return v.hasher.Clone()
}

// Has reports whether blob t/id is known to be stored or queued in this
// session (uploaded, queued, or found by Stored); other blobs the vault
// had before are found by the batch's missing query instead, so the agent
// may encode a blob the vault already has.
func (v *Vault) Has(t vault.BlobType, id vault.ID) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.known[blobKey{t, id}]
	return ok
}

// Stored asks the server which of blobs ids (of type t) it holds, at most
// api.MaxMissingIDs to a request, and reports for each whether it does.
// This is how an incremental backup learns that its parent's chunks are
// still stored without reading the vault's index (which a source's token
// may not): the agent asks only about IDs it read in its own parent's
// trees, and the endpoint is the one every upload asks already.
//
// SECURITY: a blob the server says it holds may be referenced by this
// backup's snapshot, so it must stay stored until that snapshot is saved.
// It does: the server registered this client's writer session (at the
// first backup request, LoadDedup) before answering, and answers from the
// index writers deduplicate against, which leaves out condemned packs; a
// pack condemned later waits for the session to end (docs/retention.md).
// The blobs it holds are then known to this session like uploaded ones
// (Has reports them, SaveBlob skips them).
func (v *Vault) Stored(ctx context.Context, t vault.BlobType, ids []vault.ID) ([]bool, error) {
	held := make([]bool, len(ids))
	pos := map[blobKey][]int{} // where each blob asked about is in ids
	var ask []api.Ref
	v.mu.Lock()
	for i, id := range ids {
		k := blobKey{t, id}
		if _, ok := v.known[k]; ok {
			held[i] = true
			continue
		}
		if _, ok := pos[k]; !ok {
			ask = append(ask, api.Ref{Type: t, ID: id})
		}
		pos[k] = append(pos[k], i)
	}
	v.mu.Unlock()
	for len(ask) > 0 {
		n := min(len(ask), api.MaxMissingIDs)
		missing, err := v.missing(ctx, ask[:n])
		if err != nil {
			return nil, err
		}
		v.mu.Lock()
		for _, r := range ask[:n] {
			if missing[r] {
				continue
			}
			k := blobKey{r.Type, r.ID}
			v.known[k] = struct{}{}
			for _, i := range pos[k] {
				held[i] = true
			}
		}
		v.mu.Unlock()
		ask = ask[n:]
	}
	return held, nil
}

// missing asks the server which of refs (distinct, at most
// api.MaxMissingIDs) the vault lacks.
func (v *Vault) missing(ctx context.Context, refs []api.Ref) (map[api.Ref]bool, error) {
	body := make([]byte, 0, len(refs)*api.RefSize)
	for _, r := range refs {
		body = api.AppendRef(body, r)
	}
	resp, err := v.c.do(ctx, http.MethodPost, v.path+"/missing", bytes.NewReader(body), api.ContentBinary)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	// SECURITY: the answer may name only blobs asked about, each once;
	// anything else (an endless list would grow the map without bound)
	// is an error.
	asked := make(map[api.Ref]bool, len(refs))
	for _, r := range refs {
		asked[r] = true
	}
	missing := map[api.Ref]bool{}
	for {
		r, err := api.ReadRef(resp.Body)
		if err == io.EOF {
			return missing, nil
		}
		if err != nil {
			return nil, fmt.Errorf("missing blobs: %w", err)
		}
		if !asked[r] || missing[r] {
			return nil, fmt.Errorf("missing blobs: %w: the server named %s blob %s, which the client did not ask about (or twice)", vault.ErrCorrupt, r.Type, r.ID.Short())
		}
		missing[r] = true
	}
}

// batch is an upload batch: upload records back to back, and where each
// begins. ticket is its place in the order batches were closed in; an
// ordered batch (trees) is sent once every batch before it is stored.
type batch struct {
	buf     []byte
	refs    []api.Ref
	offs    []int
	ticket  uint64
	ordered bool
}

// sequence hands out tickets in the order batches are closed and tracks
// which are still being uploaded.
type sequence struct {
	mu   sync.Mutex
	cond *sync.Cond
	next uint64
	open map[uint64]struct{}
}

func (q *sequence) lock() {
	q.mu.Lock()
	if q.cond == nil {
		q.cond = sync.NewCond(&q.mu)
		q.open = map[uint64]struct{}{}
	}
}

// take returns the next ticket, open until done.
func (q *sequence) take() uint64 {
	q.lock()
	defer q.mu.Unlock()
	t := q.next
	q.next++
	q.open[t] = struct{}{}
	return t
}

func (q *sequence) done(t uint64) {
	q.lock()
	defer q.mu.Unlock()
	delete(q.open, t)
	q.cond.Broadcast()
}

// waitBefore returns once no ticket below t is open.
func (q *sequence) waitBefore(t uint64) {
	q.lock()
	defer q.mu.Unlock()
	for {
		busy := false
		for o := range q.open {
			if o < t {
				busy = true
				break
			}
		}
		if !busy {
			return
		}
		q.cond.Wait()
	}
}

// closeBatch takes the batch *p (when it holds blobs) out of filling and
// gives it its ticket; v.mu must be held.
func (v *Vault) closeBatch(p **batch, ordered bool) *batch {
	b := *p
	*p = nil
	if b == nil || len(b.refs) == 0 {
		return nil
	}
	b.ticket, b.ordered = v.order.take(), ordered
	return b
}

// SaveBlob queues an encoded blob for upload (p is copied). It reports
// true when the blob was not known in this session; whether the vault
// already had it is settled when the batch goes out. Errors of earlier
// batches are returned here and by Flush.
func (v *Vault) SaveBlob(ctx context.Context, t vault.BlobType, id vault.ID, p []byte, rawLen int) (bool, error) {
	k := blobKey{t, id}
	v.mu.Lock()
	if err := v.firstErr; err != nil {
		v.mu.Unlock()
		return false, err
	}
	if _, ok := v.known[k]; ok {
		v.mu.Unlock()
		return false, nil
	}
	v.known[k] = struct{}{}
	cur := &v.cur
	if t == vault.TreeBlob {
		cur = &v.curTree
	}
	if *cur == nil {
		*cur = &batch{buf: v.batchBuf(len(p))}
	}
	b := *cur
	b.offs = append(b.offs, len(b.buf))
	b.refs = append(b.refs, api.Ref{Type: t, ID: id})
	b.buf = api.AppendUploadHeader(b.buf, api.Ref{Type: t, ID: id}, rawLen, len(p))
	b.buf = append(b.buf, p...)
	full := len(b.buf) >= v.c.opt.BatchBytes || len(b.refs) >= api.MaxMissingIDs
	var data, trees *batch
	switch {
	case full && t == vault.TreeBlob:
		// The data these trees reference may wait in the data batch:
		// it goes first.
		data = v.closeBatch(&v.cur, false)
		trees = v.closeBatch(&v.curTree, true)
	case full:
		data = v.closeBatch(&v.cur, false)
	}
	v.mu.Unlock()
	if data != nil {
		v.send(ctx, data)
	}
	if trees != nil {
		v.send(ctx, trees)
	}
	return true, nil
}

func (v *Vault) setErr(err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.firstErr == nil {
		v.firstErr = err
	}
}

// send uploads b in the background, waiting while InFlight batches are
// already going (the agent's back pressure). An ordered batch (trees)
// waits in the background, without a slot, until every batch closed
// before it is stored; it then takes a slot like the others. (Holding a
// slot while waiting could starve the batches it waits for.)
func (v *Vault) send(ctx context.Context, b *batch) {
	if !b.ordered {
		select {
		case v.sem <- struct{}{}:
		case <-ctx.Done():
			v.setErr(ctx.Err())
			v.order.done(b.ticket)
			return
		}
	}
	v.uploads.Add(1)
	go func() {
		defer v.uploads.Done()
		defer v.order.done(b.ticket)
		if b.ordered {
			v.order.waitBefore(b.ticket)
			select {
			case v.sem <- struct{}{}:
			case <-ctx.Done():
				v.setErr(ctx.Err())
				return
			}
		}
		defer func() { <-v.sem }()
		v.mu.Lock()
		failed := v.firstErr != nil
		v.mu.Unlock()
		if b.ordered && failed {
			return // what its trees reference may not be stored
		}
		if err := v.upload(ctx, b); err != nil {
			v.setErr(fmt.Errorf("upload to vault %s: %w", v.name, err))
		}
		select {
		case v.freeBufs <- b.buf[:0]:
		default:
		}
	}()
}

// batchBuf returns an empty batch buffer, reusing one whose upload ended:
// a backup sends hundreds of batches of several MiB, and allocating each
// afresh costs zeroing and collections.
func (v *Vault) batchBuf(first int) []byte {
	select {
	case b := <-v.freeBufs:
		return b
	default:
		return make([]byte, 0, v.c.opt.BatchBytes+first+api.UploadHeaderLen)
	}
}

// upload asks which of b's blobs the vault lacks and uploads those.
func (v *Vault) upload(ctx context.Context, b *batch) error {
	missing, err := v.missing(ctx, b.refs)
	if err != nil {
		return err
	}
	if len(missing) == 0 {
		return nil
	}
	body := b.buf
	if len(missing) < len(b.refs) {
		body = make([]byte, 0, len(b.buf))
		for i, r := range b.refs {
			if !missing[r] {
				continue
			}
			end := len(b.buf)
			if i+1 < len(b.offs) {
				end = b.offs[i+1]
			}
			body = append(body, b.buf[b.offs[i]:end]...)
		}
	}
	var res api.UploadResult
	resp, err := v.c.do(ctx, http.MethodPost, v.path+"/blobs", bytes.NewReader(body), api.ContentBinary)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&res); err != nil {
		return fmt.Errorf("upload: bad answer: %w", err)
	}
	v.added.Add(res.BytesAdded)
	return nil
}

// Flush sends the batch being filled, waits for every upload and asks the
// server to store its open packs. It returns the first upload error. It
// must not run concurrently with SaveBlob (the agent flushes once its
// chunk workers have finished).
func (v *Vault) Flush(ctx context.Context) error {
	v.mu.Lock()
	data := v.closeBatch(&v.cur, false)
	trees := v.closeBatch(&v.curTree, true)
	v.mu.Unlock()
	if data != nil {
		v.send(ctx, data)
	}
	if trees != nil {
		v.send(ctx, trees)
	}
	v.uploads.Wait()
	v.mu.Lock()
	err := v.firstErr
	v.mu.Unlock()
	if err != nil {
		return err
	}
	return v.c.doJSON(ctx, http.MethodPost, v.path+"/flush", nil, nil)
}

// BytesAdded is the sealed bytes the server reported storing for this
// session's uploads.
func (v *Vault) BytesAdded() uint64 { return v.added.Load() }

var encBufs = sync.Pool{New: func() any { return new([]byte) }}

// LoadBlob downloads blob t/id (unsealed by the server, still encoded),
// decodes it into dst and, when the dedup parameters are loaded, verifies
// it against its ID. A blob stored raw is read straight into dst.
func (v *Vault) LoadBlob(ctx context.Context, t vault.BlobType, id vault.ID, dst []byte) ([]byte, error) {
	return v.loadBlob(ctx, t, id, dst, v.Domain(), v.newHasher())
}

// loadBlob is LoadBlob in dedup domain d, verifying with h when set.
func (v *Vault) loadBlob(ctx context.Context, t vault.BlobType, id vault.ID, dst []byte, d string, h *format.IDHasher) ([]byte, error) {
	kind := "data"
	if t == vault.TreeBlob {
		kind = "trees"
	}
	resp, err := v.c.do(ctx, http.MethodGet, v.path+"/"+kind+"/"+id.String()+readQuery(d), nil, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := strconv.ParseUint(resp.Header.Get(api.HeaderRawLength), 10, 32)
	if err != nil || raw > format.MaxBlobRawSize {
		return nil, fmt.Errorf("%s blob %s: %w: bad raw length header", t, id.Short(), vault.ErrCorrupt)
	}
	n := resp.ContentLength
	if n <= 0 || n > format.MaxBlobRawSize+1 {
		return nil, fmt.Errorf("%s blob %s: %w: bad length %d", t, id.Short(), vault.ErrCorrupt, n)
	}
	var enc [1]byte
	if _, err := io.ReadFull(resp.Body, enc[:]); err != nil {
		return nil, fmt.Errorf("%s blob %s: %w", t, id.Short(), err)
	}
	var out []byte
	if enc[0] == format.EncodingRaw && uint64(n-1) == raw {
		if uint64(cap(dst)) < raw {
			dst = make([]byte, raw)
		}
		out = dst[:raw]
		if _, err := io.ReadFull(resp.Body, out); err != nil {
			return nil, fmt.Errorf("%s blob %s: %w", t, id.Short(), err)
		}
	} else {
		bp := encBufs.Get().(*[]byte)
		defer encBufs.Put(bp)
		p := *bp
		if int64(cap(p)) < n {
			p = make([]byte, n)
		}
		p = p[:n]
		*bp = p
		p[0] = enc[0]
		if _, err := io.ReadFull(resp.Body, p[1:]); err != nil {
			return nil, fmt.Errorf("%s blob %s: %w", t, id.Short(), err)
		}
		if out, err = v.codec.Decode(dst, p, uint32(raw)); err != nil {
			return nil, fmt.Errorf("%s blob %s: %w", t, id.Short(), err)
		}
	}
	if h != nil && h.ID(out) != id {
		return nil, fmt.Errorf("%s blob %s: %w: content does not match its ID", t, id.Short(), vault.ErrCorrupt)
	}
	return out, nil
}

// LoadBlobs downloads blobs ids of type t in one request and calls fn
// with each one's index and decoded content, in order; data is valid only
// during the call. A blob the server cannot read ends the batch with its
// error.
func (v *Vault) LoadBlobs(ctx context.Context, t vault.BlobType, ids []vault.ID, fn func(i int, data []byte) error) error {
	return v.loadBlobs(ctx, t, ids, fn, v.Domain(), v.newHasher())
}

// loadBlobs is LoadBlobs in dedup domain d, verifying with h when set.
func (v *Vault) loadBlobs(ctx context.Context, t vault.BlobType, ids []vault.ID, fn func(i int, data []byte) error, d string, h *format.IDHasher) error {
	if len(ids) > api.MaxReadRefs {
		return fmt.Errorf("load blobs: %d in one batch, at most %d", len(ids), api.MaxReadRefs)
	}
	body := make([]byte, 0, len(ids)*api.RefSize)
	for _, id := range ids {
		body = api.AppendRef(body, api.Ref{Type: t, ID: id})
	}
	resp, err := v.c.do(ctx, http.MethodPost, v.path+"/read"+readQuery(d), bytes.NewReader(body), api.ContentBinary)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	bp := encBufs.Get().(*[]byte)
	defer encBufs.Put(bp)
	var out []byte
	for i, id := range ids {
		ref, rawLen, encLen, failed, err := api.ReadRecordHeader(resp.Body, format.MaxBlobRawSize)
		if err == io.EOF {
			return fmt.Errorf("%s blob %s: %w: the server's answer ended early", t, id.Short(), vault.ErrTruncated)
		}
		if err != nil {
			return fmt.Errorf("%s blob %s: %w", t, id.Short(), err)
		}
		if ref.Type != t || ref.ID != id {
			return fmt.Errorf("%s blob %s: %w: the server answered with blob %s", t, id.Short(), vault.ErrCorrupt, ref.ID.Short())
		}
		if failed != nil {
			return fmt.Errorf("%s blob %s: %w", t, id.Short(), failed)
		}
		p := *bp
		if cap(p) < encLen {
			p = make([]byte, encLen)
		}
		p = p[:encLen]
		*bp = p
		if _, err := io.ReadFull(resp.Body, p); err != nil {
			return fmt.Errorf("%s blob %s: %w", t, id.Short(), err)
		}
		if out, err = v.codec.Decode(out[:0], p, uint32(rawLen)); err != nil {
			return fmt.Errorf("%s blob %s: %w", t, id.Short(), err)
		}
		if h != nil && h.ID(out) != id {
			return fmt.Errorf("%s blob %s: %w: content does not match its ID", t, id.Short(), vault.ErrCorrupt)
		}
		if err := fn(i, out); err != nil {
			return err
		}
	}
	// Read the streamed answer to its end (its last chunk may not have
	// come yet): closing a body before its end closes the connection, and
	// a restore of small files then paid a TLS handshake per batch (447
	// for the tree set). One byte at most: a server sending more than it
	// was asked for is not read further (the connection is dropped).
	var one [1]byte
	io.ReadFull(resp.Body, one[:])
	return nil
}

// LoadTree downloads and decodes tree id.
func (v *Vault) LoadTree(ctx context.Context, id vault.ID) (*format.Tree, error) {
	return loadTree(ctx, v, id)
}

// loadTree downloads tree id through r (which checks it against its ID
// in r's dedup domain) and decodes it.
func loadTree(ctx context.Context, r interface {
	LoadBlob(context.Context, vault.BlobType, vault.ID, []byte) ([]byte, error)
}, id vault.ID) (*format.Tree, error) {
	b, err := r.LoadBlob(ctx, vault.TreeBlob, id, nil)
	if err != nil {
		return nil, err
	}
	t, err := format.DecodeTree(b)
	if err != nil {
		return nil, fmt.Errorf("tree %s: %w", id, err)
	}
	return t, nil
}

// BlobSize returns a blob's raw length from the vault's index, which is
// downloaded once, on first use.
func (v *Vault) BlobSize(t vault.BlobType, id vault.ID) (uint32, error) {
	v.indexOnce.Do(func() { v.index, v.indexErr = v.loadIndex(context.Background()) })
	if v.indexErr != nil {
		return 0, v.indexErr
	}
	n, ok := v.index[blobKey{t, id}]
	if !ok {
		return 0, fmt.Errorf("%s blob %s: %w in the index", t, id, vault.ErrNotFound)
	}
	return n, nil
}

func (v *Vault) loadIndex(ctx context.Context) (map[blobKey]uint32, error) {
	return v.loadIndexOf(ctx, v.path+"/index")
}

func (v *Vault) loadIndexOf(ctx context.Context, path string) (map[blobKey]uint32, error) {
	resp, err := v.c.do(ctx, http.MethodGet, path, nil, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	idx := map[blobKey]uint32{}
	for {
		r, n, err := api.ReadIndexEntry(resp.Body)
		if err == io.EOF {
			return idx, nil
		}
		if err != nil {
			return nil, fmt.Errorf("vault %s index: %w", v.name, err)
		}
		idx[blobKey{r.Type, r.ID}] = n
	}
}

// SaveSnapshot records s; the server assigns its ID and its time (when
// it receives it: s.Time is not sent), and an agent's host.
func (v *Vault) SaveSnapshot(ctx context.Context, s vault.SnapshotRecord) (vault.SnapshotRecord, error) {
	var out api.Snapshot
	w := api.FromSnapshot(s)
	w.Time = time.Time{}
	if err := v.c.doJSON(ctx, http.MethodPost, v.path+"/snapshots", w, &out); err != nil {
		return s, err
	}
	// SECURITY: saving the snapshot ended the server's writer session, and
	// with it the hold on the blobs it knew of; a next backup through this
	// Vault starts a new session and must ask again (Has, Stored).
	v.mu.Lock()
	clear(v.known)
	v.mu.Unlock()
	return out.Record()
}

// Sources lists each source (host) of the vault with its newest snapshot
// and newest report about its machine (GET /v1/vaults/{vault}/sources).
// The strings in it are the agents' own: escape them before showing them.
func (v *Vault) Sources(ctx context.Context) ([]api.SourceReport, error) {
	var out []api.SourceReport
	if err := v.c.doJSON(ctx, http.MethodGet, v.path+"/sources", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Snapshots lists the vault's snapshots, oldest first.
func (v *Vault) Snapshots(ctx context.Context) ([]vault.SnapshotRecord, error) {
	var out []api.Snapshot
	if err := v.c.doJSON(ctx, http.MethodGet, v.path+"/snapshots", nil, &out); err != nil {
		return nil, err
	}
	recs := make([]vault.SnapshotRecord, len(out))
	for i, w := range out {
		r, err := w.Record()
		if err != nil {
			return nil, err
		}
		recs[i] = r
	}
	return recs, nil
}

// FindSnapshot resolves "latest", an ID or a unique prefix on the server,
// which authenticates the stored snapshot object. An answer whose ID does
// not start with the prefix asked for is refused.
func (v *Vault) FindSnapshot(ctx context.Context, ref string) (vault.SnapshotRecord, error) {
	var out api.Snapshot
	if err := v.c.doJSON(ctx, http.MethodGet, v.path+"/snapshots/"+url.PathEscape(ref), nil, &out); err != nil {
		return vault.SnapshotRecord{}, err
	}
	s, err := out.Record()
	if err != nil {
		return s, err
	}
	if ref != "latest" && !strings.HasPrefix(s.ID.String(), strings.ToLower(ref)) {
		return vault.SnapshotRecord{}, fmt.Errorf("snapshot %q: %w: the server answered with snapshot %s", ref, vault.ErrCorrupt, s.ID.Short())
	}
	return s, nil
}

// Check runs a check on the server. With progress set, the server
// streams its progress, and progress is called with each update.
func (v *Vault) Check(ctx context.Context, readData bool, progress func(api.CheckProgress)) (api.CheckReport, error) {
	return v.CheckWith(ctx, api.CheckRequest{ReadData: readData}, progress)
}

// CheckWith runs a check on the server as body asks (a subset of the
// packs' data, say).
func (v *Vault) CheckWith(ctx context.Context, body api.CheckRequest, progress func(api.CheckProgress)) (api.CheckReport, error) {
	var out api.CheckReport
	if progress == nil {
		err := v.c.doJSON(ctx, http.MethodPost, v.path+"/check", body, &out)
		return out, err
	}
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, v.c.base.String()+v.path+"/check", bytes.NewReader(b))
	if err != nil {
		return out, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", api.ContentNDJSON)
	resp, err := v.c.send(req)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	// One event a line, each at most maxCheckEvent: a line is read whole
	// before it is decoded, and a longer one is an error.
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		line, err := readEventLine(br, maxCheckEvent)
		if err != nil {
			return out, fmt.Errorf("check: the server's answer ended early: %w", err)
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var ev api.CheckEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return out, fmt.Errorf("check: bad event from the server: %w", err)
		}
		switch {
		case ev.Progress != nil:
			progress(*ev.Progress)
		case ev.Error != nil:
			return out, serverError(api.ErrorFromBody(http.StatusOK, *ev.Error))
		case ev.Report != nil:
			return *ev.Report, nil
		}
	}
}

// maxCheckEvent bounds one line of a check's progress stream.
const maxCheckEvent = 1 << 20

// readEventLine reads one line of br (without its newline), refusing one
// longer than limit.
func readEventLine(br *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > limit {
			return nil, fmt.Errorf("an event longer than %d bytes", limit)
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF && len(line) > 0:
			return line, nil
		default:
			return nil, err
		}
	}
}

// CreatePrincipal creates a user or an agent.
func (c *Client) CreatePrincipal(ctx context.Context, p api.CreatePrincipal) (api.PrincipalInfo, error) {
	var out api.PrincipalInfo
	err := c.doJSON(ctx, http.MethodPost, "/v1/principals", p, &out)
	return out, err
}

// Principals lists principals with their roles.
func (c *Client) Principals(ctx context.Context) ([]api.PrincipalInfo, error) {
	var out []api.PrincipalInfo
	err := c.doJSON(ctx, http.MethodGet, "/v1/principals", nil, &out)
	return out, err
}

// AssignRole assigns a role; a critical assignment (security approver)
// answers with a request.
func (c *Client) AssignRole(ctx context.Context, a api.RoleAssignment) (api.RoleResult, error) {
	var out api.RoleResult
	err := c.doJSON(ctx, http.MethodPost, "/v1/roles", a, &out)
	return out, err
}

// RevokeRole revokes a role; revoking the last owner answers with a
// request.
func (c *Client) RevokeRole(ctx context.Context, a api.RoleAssignment) (api.RoleResult, error) {
	var out api.RoleResult
	err := c.doJSON(ctx, http.MethodDelete, "/v1/roles", a, &out)
	return out, err
}

// Roles lists role assignments, of one principal and/or on one vault.
func (c *Client) Roles(ctx context.Context, principal, vaultName string) ([]api.RoleAssignment, error) {
	q := url.Values{}
	if principal != "" {
		q.Set("principal", principal)
	}
	if vaultName != "" {
		q.Set("vault", vaultName)
	}
	path := "/v1/roles"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out []api.RoleAssignment
	err := c.doJSON(ctx, http.MethodGet, path, nil, &out)
	return out, err
}

// Login exchanges a principal's password for a token.
func (c *Client) Login(ctx context.Context, l api.Login) (api.Token, error) {
	var out api.Token
	err := c.doJSON(ctx, http.MethodPost, "/v1/login", l, &out)
	return out, err
}

// AuditLog reads audit entries (query: vault, principal, op, outcome,
// since, limit).
func (c *Client) AuditLog(ctx context.Context, q url.Values) ([]api.AuditEntry, error) {
	path := "/v1/audit"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out []api.AuditEntry
	err := c.doJSON(ctx, http.MethodGet, path, nil, &out)
	return out, err
}

// AuditExport writes the server's audit evidence archive to w.
func (c *Client) AuditExport(ctx context.Context, w io.Writer) error {
	resp, err := c.do(ctx, http.MethodGet, "/v1/audit/export", nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(w, io.LimitReader(resp.Body, maxAuditExport+1))
	if err != nil {
		return fmt.Errorf("audit export: %w", err)
	}
	if n > maxAuditExport {
		return fmt.Errorf("audit export: the server's answer exceeds %d GiB", maxAuditExport>>30)
	}
	return nil
}

// maxAuditExport bounds an audit export download.
const maxAuditExport = 4 << 30

// AddSource adds an agent to the vault (backup-operator) and returns its
// new token.
func (v *Vault) AddSource(ctx context.Context, s api.AddSource) (api.Token, error) {
	var out api.Token
	err := v.c.doJSON(ctx, http.MethodPost, v.path+"/sources", s, &out)
	return out, err
}

// LocalCopyKey asks the vault for this agent's local-copy key: a new one
// when wrapped is empty, else the one wrapped holds (POST
// /v1/vaults/{vault}/local-copy-key). It returns the key and its wrapped
// form.
func (v *Vault) LocalCopyKey(ctx context.Context, wrapped []byte) (key [32]byte, wrappedOut []byte, err error) {
	var out api.LocalCopyKey
	if err := v.c.doJSON(ctx, http.MethodPost, v.path+"/local-copy-key", api.LocalCopyKeyRequest{Wrapped: wrapped}, &out); err != nil {
		return key, nil, err
	}
	defer clear(out.Key)
	if len(out.Key) != len(key) || len(out.Wrapped) == 0 || len(out.Wrapped) > api.MaxLocalCopyWrapped {
		return key, nil, fmt.Errorf("vault %s: local-copy key: %w: bad answer", v.name, vault.ErrCorrupt)
	}
	copy(key[:], out.Key)
	return key, out.Wrapped, nil
}

// Posture fetches the vault's signed posture report (the JSON envelope
// docs/posture.md describes, as the server sent it) with the history
// of the window since ("90d"; "" for the server's default).
func (v *Vault) Posture(ctx context.Context, since string) ([]byte, error) {
	path := v.path + "/posture"
	if since != "" {
		path += "?" + url.Values{"since": {since}}.Encode()
	}
	resp, err := v.c.do(ctx, http.MethodGet, path, nil, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxPostureReport+1))
	if err != nil {
		return nil, fmt.Errorf("posture report: %w", err)
	}
	if len(b) > maxPostureReport {
		return nil, fmt.Errorf("posture report: the server's answer exceeds %d MiB", maxPostureReport>>20)
	}
	return b, nil
}

// maxPostureReport bounds a posture report download.
const maxPostureReport = 64 << 20
