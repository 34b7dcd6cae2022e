package main

import (
	"bufio"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/server/servertest"
)

// requestCounts reads srv's request counters by route.
func requestCounts(t *testing.T, srv *servertest.Env) map[string]int {
	t.Helper()
	c := srv.Client(t, srv.OwnerToken)
	text, err := c.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		i, sp := strings.Index(line, `route="`), strings.LastIndexByte(line, ' ')
		if !strings.HasPrefix(line, "coffer_http_requests_total{") || i < 0 || sp < 0 {
			continue
		}
		route := line[i+len(`route="`):]
		route = route[:strings.IndexByte(route, '"')]
		n, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[route] += int(n)
	}
	return out
}

const (
	routeTree = "GET /v1/vaults/{vault}/trees/{id}"
	routeData = "GET /v1/vaults/{vault}/data/{id}"
	routeRead = "POST /v1/vaults/{vault}/read"
	routeMiss = "POST /v1/vaults/{vault}/missing"
)

// TestRemoteReadsBatched: through a vault server, dump, copy, ls, find,
// stats and diff read trees and chunks many per request, as the server's
// request counters show: a snapshot of 40 directories and 400 small files
// (and one file of several chunks) took, before, a request per tree and
// one (copy: two) per chunk.
func TestRemoteReadsBatched(t *testing.T) {
	srv := servertest.Start(t)
	e := serverEnv(t, srv)
	mustCoffer(t, e, "vault", "create", "prod")
	mustCoffer(t, e, "vault", "create", "copy")
	e.setenv("COFFER_VAULT", srv.URL+"/prod")
	src := filepath.Join(t.TempDir(), "data")
	for d := range 40 {
		for f := range 10 {
			writeFile(t, filepath.Join(src, fmt.Sprintf("d%02d", d), "sub", fmt.Sprintf("f%d", f)), randBytes(uint64(100*d+f), 3000), 0o644)
		}
	}
	writeFile(t, filepath.Join(src, "big.bin"), randBytes(7, 12<<20), 0o644)
	first := backupJSON(t, e, src)
	writeFile(t, filepath.Join(src, "d07", "sub", "f3"), []byte("changed"), 0o644)
	second := backupJSON(t, e, src)

	measure := func(args ...string) map[string]int {
		t.Helper()
		before := requestCounts(t, srv)
		mustCoffer(t, e, args...)
		after := requestCounts(t, srv)
		d := map[string]int{}
		for _, r := range []string{routeTree, routeData, routeRead, routeMiss} {
			d[r] = after[r] - before[r]
		}
		t.Logf("coffer %s: %d tree GETs, %d data GETs, %d batched reads, %d missing probes", strings.Join(args, " "), d[routeTree], d[routeData], d[routeRead], d[routeMiss])
		return d
	}
	// Before: 83 tree GETs (root, 40 dirs, 40 subs, …) and 401+ data GETs.
	tmp := t.TempDir()
	if d := measure("dump", "latest", "/", "--target", filepath.Join(tmp, "all.tar")); d[routeData] > 0 || d[routeRead] > 12 || d[routeTree] > 2 {
		t.Errorf("dump: %v", d)
	}
	if d := measure("dump", "latest", src+"/big.bin", "--target", filepath.Join(tmp, "big")); d[routeData] > 0 || d[routeRead] > 1 {
		t.Errorf("dump of one file: %v", d)
	}
	// find and stats walk both snapshots: twice ls's bound.
	for _, c := range []struct {
		args []string
		max  int
	}{{[]string{"ls", "latest"}, 8}, {[]string{"find", "f3"}, 16}, {[]string{"stats"}, 16}, {[]string{"diff", first[:8], second[:8]}, 8}} {
		if d := measure(c.args...); d[routeTree]+d[routeRead] > c.max {
			t.Errorf("%s: %v", c.args[0], d)
		}
	}
	copyArgs := []string{"copy", "--from-vault", srv.URL + "/prod", "--to-vault", srv.URL + "/copy", first[:8]}
	if d := measure(copyArgs...); d[routeData] > 0 || d[routeTree]+d[routeRead]+d[routeMiss] > 24 {
		t.Errorf("copy: %v", d)
	}
	// A second copy compares the trees of both sides, many per request.
	if d := measure(copyArgs...); d[routeData] > 0 || d[routeTree]+d[routeRead]+d[routeMiss] > 24 {
		t.Errorf("second copy: %v", d)
	}
}
