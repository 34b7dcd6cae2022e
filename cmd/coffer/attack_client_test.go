package main

// Attacks on what the CLI shows and trusts: a hostile or hijacked vault
// server (or one whose disk was rewritten) answering the CLI, and values
// other principals chose printed to this user's terminal. Each test plays
// the attacker and asserts the promise it attacks (docs/security.md).

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/audit"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
)

// fakeServer is a hostile vault server on loopback TLS: it answers every
// request with whatever handler the test sets last.
type fakeServer struct {
	*httptest.Server
	caFile string
	mu     sync.Mutex
	h      http.HandlerFunc
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	f := &fakeServer{}
	f.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		h := f.h
		f.mu.Unlock()
		if h == nil {
			http.NotFound(w, r)
			return
		}
		h(w, r)
	}))
	t.Cleanup(f.Close)
	f.caFile = filepath.Join(t.TempDir(), "fake-ca.pem")
	writeFile(t, f.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.Certificate().Raw}), 0o644)
	return f
}

func (f *fakeServer) set(h http.HandlerFunc) {
	f.mu.Lock()
	f.h = h
	f.mu.Unlock()
}

// serveFile answers GET path with the file's bytes.
func (f *fakeServer) serveFile(t *testing.T, path, file string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	f.set(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != path {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	})
}

// env returns a CLI environment that talks to f.
func (f *fakeServer) env(t *testing.T) *testEnv {
	e := newEnv(t)
	e.setenv("COFFER_CACERT", f.caFile)
	e.setenv("COFFER_TOKEN", "cft_stolen_if_you_see_this")
	e.setenv("COFFER_VAULT", f.URL)
	return e
}

// serverEnv returns a CLI environment for the real server srv (owner
// token).
func serverEnv(t *testing.T, srv *servertest.Env) *testEnv {
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	e.setenv("COFFER_TOKEN", srv.OwnerToken)
	e.setenv("COFFER_VAULT", srv.URL)
	return e
}

// auditExport checkpoints srv's audit log and exports it to a file.
func auditExport(t *testing.T, srv *servertest.Env, e *testEnv) string {
	t.Helper()
	if err := srv.Server.CheckpointAudit(t.Context()); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "evidence.tar")
	mustCoffer(t, e, "audit", "export", "--out", out)
	return out
}

// TestAttackAuditRollbackThroughVault: a server that serves an older
// (self-consistent, correctly signed) export of its log after the
// auditor verified a newer one is caught by `audit verify --vault`: the
// first verify pins the verifier key and the newest checkpoint.
func TestAttackAuditRollbackThroughVault(t *testing.T) {
	srv := servertest.Start(t)
	se := serverEnv(t, srv)
	mustCoffer(t, se, "vault", "create", "prod")
	old := auditExport(t, srv, se)
	for range 3 {
		mustCoffer(t, se, "token", "create", "--role", "backup-reader", "--vault", srv.URL+"/prod")
	}
	cur := auditExport(t, srv, se)

	f := newFakeServer(t)
	e := f.env(t)
	f.serveFile(t, "/v1/audit/export", cur)
	mustCoffer(t, e, "audit", "verify")
	f.serveFile(t, "/v1/audit/export", old)
	failsWith(t, e, "does not verify", "audit", "verify")
}

// TestAttackAuditKeyChangeThroughVault: a server that answers with a log
// signed by another key (a replaced server, or a rewritten log re-signed)
// fails `audit verify --vault`, which names the pinned key and says how
// to accept a genuine rotation; accepting it does not accept a log that
// does not extend the pinned checkpoint.
func TestAttackAuditKeyChangeThroughVault(t *testing.T) {
	srvA, srvB := servertest.Start(t), servertest.Start(t)
	ea, eb := serverEnv(t, srvA), serverEnv(t, srvB)
	mustCoffer(t, ea, "vault", "create", "prod")
	mustCoffer(t, eb, "vault", "create", "prod")
	a, b := auditExport(t, srvA, ea), auditExport(t, srvB, eb)

	f := newFakeServer(t)
	e := f.env(t)
	f.serveFile(t, "/v1/audit/export", a)
	mustCoffer(t, e, "audit", "verify")
	f.serveFile(t, "/v1/audit/export", b)
	msg := failsWith(t, e, "--accept-new-key", "audit", "verify")
	if !strings.Contains(msg, srvA.Server.AuditVerifierKey()) || !strings.Contains(msg, srvB.Server.AuditVerifierKey()) {
		t.Errorf("the refusal does not name the pinned and the new key: %q", msg)
	}
	failsWith(t, e, "--accept-new-key", "audit", "verify", "--verifier-key", srvB.Server.AuditVerifierKey())
	failsWith(t, e, "does not verify", "audit", "verify", "--accept-new-key")
	// Nothing was re-pinned by the attempts.
	f.serveFile(t, "/v1/audit/export", a)
	mustCoffer(t, e, "audit", "verify")
}

// resignExport rewrites an export archive as a rotation of the server's
// audit key would present it: the same entries and earlier checkpoints,
// the cut signed by a new key, which the archive carries.
func resignExport(t *testing.T, in string) (out, newKey string) {
	t.Helper()
	f, err := os.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	skey, vkey, err := note.GenerateKey(rand.Reader, audit.KeyName)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		switch h.Name {
		case audit.ExportVerifierKeyPath:
			b = []byte(vkey + "\n")
		case audit.ExportDir + "/checkpoint.note":
			text, _, ok := strings.Cut(string(b), "\n\n")
			if !ok {
				t.Fatalf("checkpoint.note: %q", b)
			}
			if b, err = note.Sign(&note.Note{Text: text + "\n"}, signer); err != nil {
				t.Fatal(err)
			}
		}
		h.Size = int64(len(b))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(b)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	out = filepath.Join(t.TempDir(), "rotated.tar")
	writeFile(t, out, buf.Bytes(), 0o644)
	return out, vkey
}

// TestAttackAuditKeyRotationAccepted: a log that continues the pinned
// one under a new key verifies only once the auditor accepts the key
// (--accept-new-key), which is then pinned.
func TestAttackAuditKeyRotationAccepted(t *testing.T) {
	srv := servertest.Start(t)
	se := serverEnv(t, srv)
	mustCoffer(t, se, "vault", "create", "prod")
	first := auditExport(t, srv, se)
	mustCoffer(t, se, "token", "create", "--role", "backup-reader", "--vault", srv.URL+"/prod")
	rotated, newKey := resignExport(t, auditExport(t, srv, se))

	f := newFakeServer(t)
	e := f.env(t)
	f.serveFile(t, "/v1/audit/export", first)
	mustCoffer(t, e, "audit", "verify")
	f.serveFile(t, "/v1/audit/export", rotated)
	failsWith(t, e, "--accept-new-key", "audit", "verify")
	_, stderr, code := coffer(t, e, "audit", "verify", "--accept-new-key")
	if code != exitOK || !strings.Contains(stderr, newKey) {
		t.Fatalf("verify --accept-new-key of a rotated key: exit %d, %q", code, stderr)
	}
	mustCoffer(t, e, "audit", "verify") // the new key is pinned
	f.serveFile(t, "/v1/audit/export", first)
	failsWith(t, e, "", "audit", "verify") // signed by the old key, and older than the pinned checkpoint
}

// TestAttackAuditKeyChangeThroughData: `audit verify --data` no longer
// re-pins a changed verifier key silently: another server's data (a
// self-consistent log under another key) at the same place fails, even
// with --accept-new-key (it does not extend the pinned checkpoint), and
// the pin stays.
func TestAttackAuditKeyChangeThroughData(t *testing.T) {
	srvA, srvB := servertest.Start(t), servertest.Start(t)
	ea, eb := serverEnv(t, srvA), serverEnv(t, srvB)
	mustCoffer(t, ea, "vault", "create", "prod")
	mustCoffer(t, eb, "vault", "create", "prod")
	oldKey := srvA.Server.AuditVerifierKey()
	for _, s := range []*servertest.Env{srvA, srvB} {
		if err := s.Server.CheckpointAudit(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(t.TempDir(), "coffer-data")
	point := func(dir string) {
		os.Remove(link)
		if err := os.Symlink(dir, link); err != nil {
			t.Fatal(err)
		}
	}
	e := newEnv(t)
	point(srvA.DataDir)
	mustCoffer(t, e, "audit", "verify", "--data", link)

	point(srvB.DataDir)
	msg := failsWith(t, e, "--accept-new-key", "audit", "verify", "--data", link)
	if !strings.Contains(msg, oldKey) {
		t.Errorf("the refusal does not name the pinned key %s: %q", oldKey, msg)
	}
	failsWith(t, e, "does not verify", "audit", "verify", "--data", link, "--accept-new-key")
	failsWith(t, e, "--accept-new-key", "audit", "verify", "--data", link) // still the old pin
	point(srvA.DataDir)
	mustCoffer(t, e, "audit", "verify", "--data", link)
}

// rsaKeyFile writes a new RSA key to dir and returns its rsa-file URI.
func rsaKeyFile(t *testing.T, dir string) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "cmk.pem")
	writeFile(t, path, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
	return "rsa-file://" + path
}

// TestAttackUseCMKImmutable: `key use-cmk` on a vault with immutability
// is a critical change: on a server the CLI files a request and says so
// (nothing changes); on a local vault it is refused, unless the vault is
// single-user and the change confirmed.
func TestAttackUseCMKImmutable(t *testing.T) {
	keyDir := t.TempDir()
	uri := rsaKeyFile(t, keyDir)
	srv := servertest.StartWith(t, servertest.Options{Configure: func(o *server.Options) { o.KeyDirs = []string{keyDir} }})
	e := serverEnv(t, srv)
	mustCoffer(t, e, "vault", "create", "prod")
	e.setenv("COFFER_VAULT", srv.URL+"/prod")
	mustCoffer(t, e, "vault", "set", "--immutability", "enabled")
	out := mustCoffer(t, e, "key", "use-cmk", uri)
	if !strings.Contains(out, "approval") || !strings.Contains(out, "coffer approve req_") || strings.Contains(out, "rewrapped") {
		t.Errorf("use-cmk on an immutable vault said:\n%s", out)
	}
	if st := mustCoffer(t, e, "key", "status"); !strings.Contains(st, "platform-managed") {
		t.Errorf("the key changed before approval:\n%s", st)
	}

	for _, single := range []bool{false, true} {
		l := newEnv(t)
		args := []string{"vault", "create", "default"}
		if single {
			args = append(args, "--single-user")
		}
		mustCoffer(t, l, args...)
		mustCoffer(t, l, "vault", "set", "--immutability", "enabled", "--confirm") // one-way unless single-user
		luri := rsaKeyFile(t, t.TempDir())
		failsWith(t, l, "approval", "key", "use-cmk", luri)
		if st := mustCoffer(t, l, "key", "status"); !strings.Contains(st, "platform-managed") {
			t.Errorf("single-user %v: the key changed after a refusal:\n%s", single, st)
		}
		if !single {
			failsWith(t, l, "approval", "key", "use-cmk", luri, "--confirm")
			continue
		}
		mustCoffer(t, l, "key", "use-cmk", luri, "--confirm")
		if st := mustCoffer(t, l, "key", "status"); !strings.Contains(st, "customer-managed") {
			t.Errorf("confirmed on a single-user vault, the key did not change:\n%s", st)
		}
	}
}

// evil is a value a hostile principal or server chooses: an ESC sequence
// that erases the line, a carriage return, a forged line, a bidi override
// and C1 controls, as a rune and as a raw byte.
const evil = "\x1b[2K\rdeleting nothing\u202e\u2066\u009b31m\x9b\x7f\nforged line"

// assertEscaped fails when out holds anything a terminal would act on
// (but newline and tab) or the forged line at the start of a line, or
// lacks the escaped form of evil.
func assertEscaped(t *testing.T, what, out string) {
	t.Helper()
	for _, bad := range []string{"\x1b", "\r", "\u202e", "\u2066", "\u009b", "\x9b", "\x7f"} {
		if strings.Contains(out, bad) {
			t.Errorf("%s prints %q raw:\n%q", what, bad, out)
		}
	}
	if strings.Contains(out, "\nforged line") {
		t.Errorf("%s prints a value's newline raw, forging a line:\n%q", what, out)
	}
	if !strings.Contains(out, `\x1b[2K\rdeleting nothing`) {
		t.Errorf("%s does not show the value escaped:\n%q", what, out)
	}
}

// TestAttackTerminalEscapesFromServer: values a hostile server (or the
// principals behind it) chose are printed escaped by every listing, and
// in the server's error messages; --json stays exact JSON, holding the
// same value, with nothing raw that a terminal acts on.
func TestAttackTerminalEscapesFromServer(t *testing.T) {
	f := newFakeServer(t)
	e := f.env(t)
	e.setenv("COFFER_VAULT", f.URL+"/prod")
	now := time.Now().UTC()
	tree := strings.Repeat("ab", 32)
	answers := map[string]any{
		"/v1/requests": []api.Request{{ID: "req_0123456789abcdef", Vault: "prod", Op: "vault-delete", Summary: evil, Requester: evil,
			Created: now, Expires: now.Add(time.Hour), State: "pending"}},
		"/v1/tokens":                 []api.Token{{ID: "tok_1", Name: evil, Role: "owner", Created: now, Principal: evil}},
		"/v1/vaults/prod/snapshots":  []api.Snapshot{{ID: strings.Repeat("cd", 32), Time: now, Host: evil, Paths: []string{"/" + evil}, Tags: []string{evil}, Tree: tree}},
		"/v1/audit":                  []api.AuditEntry{{Index: 1, Time: now, Principal: evil, Source: evil, Vault: "prod", Op: evil, Outcome: "ok", Detail: evil}},
		"/v1/principals":             []api.PrincipalInfo{{ID: "prn_1", Name: evil, Kind: "user"}},
		"/v1/vaults/prod/events":     []api.VaultEvent{{Time: now, Principal: evil, Event: "request", Detail: evil, OK: true}},
		"/v1/vaults/prod/key/events": []api.KeyEvent{{Time: now, Principal: evil, Event: "use-cmk", KEK: evil, Detail: evil, OK: true}},
	}
	f.set(func(w http.ResponseWriter, r *http.Request) {
		if v, ok := answers[r.URL.Path]; ok {
			json.NewEncoder(w).Encode(v)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		json.NewEncoder(w).Encode(api.Error{Code: "forbidden", Message: evil})
	})
	for _, args := range [][]string{
		{"requests"}, {"token", "list"}, {"snapshots"}, {"audit", "log"}, {"user", "list"}, {"vault", "log"}, {"key", "log"},
	} {
		out, stderr, code := coffer(t, e, args...)
		if code != exitOK {
			t.Errorf("coffer %s: exit %d: %s", strings.Join(args, " "), code, stderr)
			continue
		}
		assertEscaped(t, "coffer "+strings.Join(args, " "), out)
	}
	// The server's error message.
	_, stderr, code := coffer(t, e, "vault", "show")
	if code != exitFailure {
		t.Errorf("vault show against a refusing server: exit %d", code)
	}
	assertEscaped(t, "an error message from the server", stderr)

	// --json: the exact value, and nothing raw.
	for _, args := range [][]string{{"requests", "--json"}, {"snapshots", "--json"}, {"audit", "log", "--json"}} {
		out := mustCoffer(t, e, args...)
		for _, bad := range []string{"\x1b", "\r", "\u202e", "\u2066", "\u009b", "\x7f"} {
			if strings.Contains(out, bad) {
				t.Errorf("coffer %s prints %q raw", strings.Join(args, " "), bad)
			}
		}
		if !strings.Contains(out, `\u001b[2K\rdeleting nothing`) {
			t.Errorf("coffer %s: the value is not in the JSON:\n%s", strings.Join(args, " "), out)
		}
		var v any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Errorf("coffer %s: not JSON: %v", strings.Join(args, " "), err)
		}
	}
	var rs []api.Request
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "requests", "--json")), &rs); err != nil || len(rs) != 1 || rs[0].Summary != strings.ToValidUTF8(evil, "\ufffd") {
		t.Errorf("requests --json does not hold the exact value: %v %+v", err, rs)
	}
}

// TestAttackTerminalEscapesInFileNames: file names are chosen by whoever
// writes the backed-up directories; ls, ls -l, diff and the restore's
// warnings print them escaped.
func TestAttackTerminalEscapesInFileNames(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	name := strings.ReplaceAll(evil, "/", "_")
	writeFile(t, filepath.Join(src, "plain"), []byte("x"), 0o644)
	first := backupJSON(t, e, src)
	writeFile(t, filepath.Join(src, name), []byte("x"), 0o644)
	if err := os.Symlink(name, filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	second := backupJSON(t, e, src)
	assertEscaped(t, "ls", mustCoffer(t, e, "ls", "latest"))
	assertEscaped(t, "ls -l", mustCoffer(t, e, "ls", "-l", "latest"))
	assertEscaped(t, "diff", mustCoffer(t, e, "diff", first[:8], second[:8]))
	// A restore over an existing file warns, naming it.
	dst := t.TempDir()
	mustCoffer(t, e, "restore", "latest", "--target", dst)
	_, stderr, _ := coffer(t, e, "restore", "latest", "--target", dst)
	if strings.Contains(stderr, "deleting nothing") {
		assertEscaped(t, "restore's warnings", stderr)
	}
}

// TestAttackAuditExportNotInMemory: the audit export a server sends is
// not held in memory (old: up to 4 GiB in a buffer): streaming 64 MiB of
// garbage to `audit verify` and `audit export` allocates far less, and
// fails as not being an export.
func TestAttackAuditExportNotInMemory(t *testing.T) {
	f := newFakeServer(t)
	e := f.env(t)
	chunk := bytes.Repeat([]byte("garbage!"), 8<<10)
	f.set(func(w http.ResponseWriter, r *http.Request) {
		for range (64 << 20) / len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	for _, args := range [][]string{{"audit", "verify"}, {"audit", "export", "--out", filepath.Join(t.TempDir(), "ev.tar")}} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, stderr, code := coffer(t, e, args...)
		runtime.ReadMemStats(&after)
		if code != exitFailure || !strings.Contains(stderr, "not an audit export") {
			t.Errorf("coffer %s of 64 MiB of garbage: exit %d, %q", strings.Join(args, " "), code, stderr)
		}
		if n := after.TotalAlloc - before.TotalAlloc; n > 24<<20 {
			t.Errorf("coffer %s allocated %d MiB for a 64 MiB answer", strings.Join(args, " "), n>>20)
		}
	}
	if _, err := os.Stat(filepath.Join(e.home, "audit")); err == nil {
		if es, _ := os.ReadDir(filepath.Join(e.home, "audit")); len(es) > 0 {
			t.Errorf("a failed verify left a pin: %v", es)
		}
	}
}

// TestAttackAuditExportGarbageWithKey: garbage sent for the audit export
// to `audit verify --verifier-key`, which then reads no key from the
// export, is refused as not being an export (old: the error was lost and
// the command crashed on the missing report).
func TestAttackAuditExportGarbageWithKey(t *testing.T) {
	f := newFakeServer(t)
	e := f.env(t)
	f.set(func(w http.ResponseWriter, r *http.Request) { w.Write(bytes.Repeat([]byte("garbage!"), 1<<10)) })
	srv := servertest.Start(t)
	_, stderr, code := coffer(t, e, "audit", "verify", "--verifier-key", srv.Server.AuditVerifierKey())
	if code != exitFailure || !strings.Contains(stderr, "not an audit export") {
		t.Errorf("audit verify --verifier-key of garbage: exit %d, %q", code, stderr)
	}
}
