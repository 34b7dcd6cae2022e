package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/server/servertest"
	"github.com/coffer-backup/coffer/internal/vault"
)

func sourcesJSON(t *testing.T, e *testEnv, args ...string) map[string]api.SourceReport {
	t.Helper()
	var rs []api.SourceReport
	out := mustCoffer(t, e, append([]string{"source", "list", "--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		t.Fatalf("source list --json: %v\n%s", err, out)
	}
	m := map[string]api.SourceReport{}
	for _, r := range rs {
		m[r.Host] = r
	}
	return m
}

func validVolume(v api.SourceVolume) bool {
	switch v.Encryption {
	case vault.VolumeEncrypted:
		return v.Method != ""
	case vault.VolumeUnencrypted, vault.VolumeUnknown:
		return v.Method == "" && v.Detail != ""
	}
	return false
}

// A backup reports each path's volume; source list shows the newest
// report per host, agent status this machine's paths with their last
// backup; a copy carries the original's report, marked as a copy.
func TestSourceReportsLocal(t *testing.T) {
	e := newEnv(t)
	e.setenv("COFFER_HOST", "web01")
	a, b := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(a, "f"), []byte("a"), 0o644)
	os.WriteFile(filepath.Join(b, "g"), []byte("b"), 0o644)
	id := backupJSON(t, e, a, b)
	got := sourcesJSON(t, e)
	w, ok := got["web01"]
	if !ok || len(got) != 1 || w.LastSnapshot != id || w.ReportSnapshot != id || w.Source == nil || len(w.Source.Volumes) != 2 || w.Writer == "" {
		t.Fatalf("source list: %+v", got)
	}
	for _, v := range w.Source.Volumes {
		if !validVolume(v) || (v.Path != a && v.Path != b) {
			t.Errorf("volume %+v", v)
		}
	}
	human := mustCoffer(t, e, "source", "list")
	if !strings.Contains(human, "web01: last backup") || !strings.Contains(human, a+": ") {
		t.Errorf("source list:\n%s", human)
	}

	extra := t.TempDir()
	var st agentStatus
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "agent", "status", "--json", extra)), &st); err != nil {
		t.Fatal(err)
	}
	if st.Host != "web01" || st.LastBackup == nil || st.LastBackup.Snapshot != id || len(st.Paths) != 3 || st.TLS != nil {
		t.Fatalf("agent status: %+v", st)
	}
	for _, p := range st.Paths {
		if !validVolume(p.Volume) || (p.Path == extra) != (p.LastBackup == nil) {
			t.Errorf("path %+v", p)
		}
	}
	if out := mustCoffer(t, e, "agent", "status"); !strings.Contains(out, "last backup: ") || !strings.Contains(out, b) {
		t.Errorf("agent status:\n%s", out)
	}

	mustCoffer(t, e, "copy", "--from-vault", "default", "--to-vault", "usb")
	c := sourcesJSON(t, e, "--vault", "usb")["web01"]
	if c.CopiedFrom == nil || c.CopiedFrom.Snapshot != id || c.Source == nil || len(c.Source.Volumes) != 2 || c.Source.Volumes[0] != w.Source.Volumes[0] {
		t.Errorf("the copy's report: %+v", c)
	}
	if out := mustCoffer(t, e, "source", "list", "--vault", "usb"); !strings.Contains(out, "copied from vault") {
		t.Errorf("source list of the copy does not say it is one:\n%s", out)
	}
}

// Through a server: the agent's report is recorded under its own name,
// agent status names the agent and the TLS settings in use, and source
// list shows the writer.
func TestSourceReportsRemote(t *testing.T) {
	srv := servertest.Start(t)
	e := newEnv(t)
	e.setenv("COFFER_CACERT", srv.CAFile)
	url := srv.URL + "/prod"
	mustCoffer(t, e, "vault", "create", "prod", "--vault", srv.URL, "--token", srv.OwnerToken)
	web := strings.TrimSpace(mustCoffer(t, e, "source", "add", "web", "--vault", url, "--token", srv.OwnerToken))
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644)
	id := backupJSON(t, e, dir, "--vault", url, "--token", web)
	got := sourcesJSON(t, e, "--vault", url, "--token", srv.OwnerToken)
	if r := got["web"]; len(got) != 1 || r.ReportSnapshot != id || r.Source == nil || len(r.Source.Volumes) != 1 || !strings.Contains(r.Writer, "web") {
		t.Fatalf("source list: %+v", got)
	}
	var st agentStatus
	if err := json.Unmarshal([]byte(mustCoffer(t, e, "agent", "status", "--json", "--vault", url, "--token", web)), &st); err != nil {
		t.Fatal(err)
	}
	if st.Host != "web" || st.LastBackup == nil || st.LastBackup.Snapshot != id || len(st.Paths) != 1 || st.TLS == nil ||
		st.TLS.URL != srv.URL || st.TLS.MinVersion != "TLS 1.2" || !strings.Contains(st.TLS.CA, srv.CAFile) || st.TLS.Proxy != "none (direct)" {
		t.Fatalf("agent status: %+v (%+v)", st, st.TLS)
	}
}

// A proxy's password never reaches agent status's output.
func TestAgentStatusProxyCredentials(t *testing.T) {
	env := map[string]string{"HTTPS_PROXY": "http://alice:s3cret@proxy.example:3128", "COFFER_FINGERPRINT": "SHA256:" + strings.Repeat("ab", 32)}
	a := &app{getenv: func(k string) string { return env[k] }, now: time.Now}
	st, err := a.tlsStatus("https://backup.example.com:8443/prod")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(st.Proxy, "s3cret") || !strings.Contains(st.Proxy, "proxy.example:3128") || st.Fingerprint == "" || st.CA != "the pinned certificate only" {
		t.Fatalf("%+v", st)
	}
}

// Human output of a report goes through the terminal escaping: a hostile
// server's answer cannot clear the screen or retitle the terminal.
func TestAttackSourceListEscapes(t *testing.T) {
	var out bytes.Buffer
	w := &termWriter{w: &out}
	a := &app{stdout: w}
	now := time.Now()
	a.printSource(api.SourceReport{Host: "web\x1b[2J", LastSnapshot: "ab", LastTime: now, ReportSnapshot: "ab", ReportTime: &now, Writer: "agent:\x1b]0;pwned\x07",
		Source: &api.SourceFacts{Volumes: []api.SourceVolume{{Path: "/srv\x1b[1A", Encryption: "encrypted\x1b[0m", Method: "luks2", Detail: "\u202eok"}}}})
	w.Flush()
	if s := out.String(); strings.ContainsAny(s, "\x1b\x07\u202e") {
		t.Fatalf("escapes reached the terminal: %q", s)
	}
}
