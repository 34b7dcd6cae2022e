// Package pgtest runs a real PostgreSQL server for tests: a throwaway
// cluster in a temporary directory, started once per test binary, and a
// fresh schema for each test that asks for one.
//
// A test package that uses it calls Main from its TestMain, which stops
// the server when the tests end:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// URL skips the test when PostgreSQL is not installed, or fails it when
// COFFER_REQUIRE_SERVICES=1 (as .ci/run sets). COFFER_TEST_POSTGRES, a
// postgres:// URL of a database the tests may create schemas in, makes it
// use that server instead of starting one.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

var (
	once    sync.Once
	baseURL string // the server's database, without a schema
	stop    func()
	startEr error
)

// Main runs the tests of m and then stops the server, if one was started.
func Main(m *testing.M) {
	code := m.Run()
	if stop != nil {
		stop()
	}
	os.Exit(code)
}

// required reports whether a missing server fails the tests.
func required() bool { return os.Getenv("COFFER_REQUIRE_SERVICES") == "1" }

// BinDir returns the directory of PostgreSQL's server programs (initdb,
// pg_ctl), or "" when they are not installed.
func BinDir() string {
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	for i := len(dirs) - 1; i >= 0; i-- { // the newest version first
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i]
		}
	}
	return ""
}

// Server returns the URL of the test server's database, starting the
// server on first use.
func Server(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		if u := os.Getenv("COFFER_TEST_POSTGRES"); u != "" {
			baseURL = u
			return
		}
		baseURL, stop, startEr = start()
	})
	if startEr != nil {
		if errors.Is(startEr, errNotInstalled) && !required() {
			t.Skipf("PostgreSQL: %v", startEr)
		}
		t.Fatalf("PostgreSQL: %v", startEr)
	}
	return baseURL
}

var errNotInstalled = errors.New("not installed (apt-get install postgresql), or set COFFER_TEST_POSTGRES")

// URL returns the URL of a new, empty schema on the test server (its
// search_path), dropped when t ends.
func URL(t testing.TB) string {
	t.Helper()
	base := Server(t)
	name := "t_" + randHex(8)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE SCHEMA `+name); err != nil {
		t.Fatalf("PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			return
		}
		defer conn.Close(ctx)
		conn.Exec(ctx, `DROP SCHEMA `+name+` CASCADE`)
	})
	return WithSchema(base, name)
}

// WithSchema returns base with search_path set to schema.
func WithSchema(base, schema string) string {
	u, err := url.Parse(base)
	if err != nil {
		return base
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// start makes a cluster in a temporary directory and starts it on a free
// local port. PostgreSQL refuses to run as root, so as root the cluster
// belongs to the postgres user (or nobody) and its programs run through
// runuser.
func start() (string, func(), error) {
	bin := BinDir()
	if bin == "" {
		return "", nil, errNotInstalled
	}
	run := func(args ...string) *exec.Cmd { return exec.Command(args[0], args[1:]...) }
	var uid, gid int = -1, -1
	if os.Geteuid() == 0 {
		name := "postgres"
		u, err := user.Lookup(name)
		if err != nil {
			name = "nobody"
			if u, err = user.Lookup(name); err != nil {
				return "", nil, fmt.Errorf("running as root and there is neither a postgres nor a nobody user")
			}
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		runuser, err := exec.LookPath("runuser")
		if err != nil {
			return "", nil, fmt.Errorf("running as root without runuser: %w", err)
		}
		run = func(args ...string) *exec.Cmd {
			return exec.Command(runuser, append([]string{"-u", name, "--"}, args...)...)
		}
	}
	dir, err := os.MkdirTemp("", "coffer-pg-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	data, sock := filepath.Join(dir, "data"), filepath.Join(dir, "sock")
	for _, d := range []string{data, sock} {
		if err := os.Mkdir(d, 0o700); err != nil {
			cleanup()
			return "", nil, err
		}
		if uid >= 0 {
			if err := os.Chown(d, uid, gid); err != nil {
				cleanup()
				return "", nil, err
			}
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		cleanup()
		return "", nil, err
	}
	if out, err := run(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	port, err := freePort()
	if err != nil {
		cleanup()
		return "", nil, err
	}
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200", port, sock)
	ctl := filepath.Join(bin, "pg_ctl")
	if out, err := run(ctl, "-D", data, "-o", opts, "-l", filepath.Join(sock, "server.log"), "-w", "-t", "60", "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(sock, "server.log"))
		cleanup()
		return "", nil, fmt.Errorf("pg_ctl start: %v: %s\n%s", err, out, log)
	}
	stopCmd := run(ctl, "-D", data, "-m", "immediate", "-w", "stop")
	// A watchdog stops the server when this process ends without calling
	// stop (a test binary killed by its timeout, or a panic).
	watch := exec.Command("/bin/sh", append([]string{"-c", `p=$1; shift; while kill -0 "$p" 2>/dev/null; do sleep 2; done; "$@" >/dev/null 2>&1; rm -rf "$0"`,
		dir, strconv.Itoa(os.Getpid())}, stopCmd.Args...)...)
	watch.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := watch.Start(); err == nil {
		go watch.Wait()
	}
	stop := func() {
		stopCmd.Run()
		cleanup()
	}
	u := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		conn, err := pgx.Connect(ctx, u)
		if err == nil {
			conn.Close(ctx)
			return u, stop, nil
		}
		if ctx.Err() != nil {
			stop()
			return "", nil, fmt.Errorf("connect: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
