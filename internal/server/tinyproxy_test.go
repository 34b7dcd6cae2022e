package server_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/client"
	"github.com/coffer-backup/coffer/internal/server/servertest"
)

// startTinyproxy runs tinyproxy (the Debian package tinyproxy-bin), a real
// CONNECT proxy, on a free loopback port until the test ends. It skips
// when tinyproxy is not installed, unless COFFER_REQUIRE_SERVICES is set
// (CI installs it), and returns the proxy's URL and its log file.
func startTinyproxy(t *testing.T) (*url.URL, string) {
	t.Helper()
	bin, err := exec.LookPath("tinyproxy")
	if err != nil {
		if os.Getenv("COFFER_REQUIRE_SERVICES") != "" {
			t.Fatal("tinyproxy is not installed (apt-get install tinyproxy-bin); COFFER_REQUIRE_SERVICES is set")
		}
		t.Skip("tinyproxy not installed (apt-get install tinyproxy-bin)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir := t.TempDir()
	logFile := filepath.Join(dir, "tinyproxy.log")
	conf := fmt.Sprintf(`Port %d
Listen 127.0.0.1
Timeout 60
MaxClients 50
Allow 127.0.0.1
LogFile "%s"
LogLevel Connect
DisableViaHeader Yes
`, port, logFile)
	// No ConnectPort line: CONNECT to any port is allowed.
	cf := filepath.Join(dir, "tinyproxy.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-d", "-c", cf)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tinyproxy did not start listening on %s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return &url.URL{Scheme: "http", Host: addr}, logFile
}

// TestBackupThroughTinyproxy backs up and restores through tinyproxy, a
// CONNECT proxy as deployed in front of real networks; the proxy's log
// must show the tunnel to the server.
func TestBackupThroughTinyproxy(t *testing.T) {
	proxyURL, logFile := startTinyproxy(t)
	ctx := context.Background()
	env := servertest.Start(t)
	owner := env.Client(t, env.OwnerToken)
	if _, err := owner.CreateVault(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	tok := token(t, owner, "backup-operator", "p")
	c, err := client.New(client.Options{Server: env.URL, Token: tok, TLS: env.TLS, Proxy: http.ProxyURL(proxyURL)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	v := c.Vault("p")
	if err := v.LoadDedup(ctx); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	files := map[string][]byte{"a": randomBytes(1, 3<<20), "d/b": []byte("small"), "d/c": randomBytes(2, 100_000)}
	writeTree(t, src, files)
	res, err := agent.Backup(ctx, v, agent.BackupOptions{Paths: []string{src}, Host: "h"})
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if _, err := agent.Restore(ctx, v, res.Snapshot.Tree, agent.RestoreOptions{Target: dst}); err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(dst, src, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s differs after a restore through the proxy: %v", name, err)
		}
	}
	target := strings.TrimPrefix(env.URL, "https://")
	log, _ := os.ReadFile(logFile)
	if !bytes.Contains(log, []byte("CONNECT")) || !bytes.Contains(log, []byte(target)) {
		t.Errorf("tinyproxy's log shows no CONNECT to %s:\n%s", target, log)
	}
}
