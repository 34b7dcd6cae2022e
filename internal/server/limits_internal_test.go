package server

import (
	"fmt"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/vault"
)

// TestAddrKey: IPv4 addresses are limited one by one, IPv6 ones by their
// /64, which one subscriber rotates through for free.
func TestAddrKey(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"192.0.2.1", "192.0.2.1"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"},
		{"fe80::1%eth0", "fe80::/64"},
		{"not-an-ip", "not-an-ip"},
	} {
		if got := addrKey(c.in); got != c.want {
			t.Errorf("addrKey(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestLimiterAttemptCountsFirst: attempts are counted before their work,
// the one that reaches the limit still goes on, and a refund takes back
// one attempt without lifting a block.
func TestLimiterAttemptCountsFirst(t *testing.T) {
	var l limiter
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range failedLimit {
		if w := l.attempt("k", now); w != 0 {
			t.Fatalf("attempt %d refused", i+1)
		}
	}
	if l.attempt("k", now) == 0 {
		t.Fatal("attempt past the limit allowed")
	}
	l.refund("k")
	if l.blocked("k", now) == 0 {
		t.Error("a refund lifted the block")
	}
}

// TestRefusalBookBounded: however many addresses a flood comes from,
// a minute yields at most refusalsPerMinute entries one by one and
// refusalSummaries+1 summaries, and the summaries account for every
// refusal that was not recorded.
func TestRefusalBookBounded(t *testing.T) {
	var b refusalBook
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	const n = 25_000
	recorded := 0
	for i := range n {
		rec, due := b.admit(fmt.Sprintf("198.51.%d.%d", i/256, i%256), "POST /v1/login", false, false, now)
		if len(due) > 0 {
			t.Fatal("summaries due within the minute")
		}
		if rec {
			recorded++
		}
	}
	if recorded > refusalsPerMinute {
		t.Errorf("%d recorded one by one, want at most %d", recorded, refusalsPerMinute)
	}
	_, due := b.admit("192.0.2.1", "GET /healthz", false, false, now.Add(time.Minute))
	if len(due) > refusalSummaries+1 {
		t.Errorf("%d summary entries, want at most %d", len(due), refusalSummaries+1)
	}
	counted := 0
	for _, e := range due {
		var k int
		fmt.Sscan(e.Params["refused"], &k)
		counted += k
	}
	if recorded+counted != n {
		t.Errorf("%d recorded + %d summed up, want %d", recorded, counted, n)
	}
}

// TestReadBookCountsEveryRead: reads counted while summaries are taken
// and idle entries retired are each summed up exactly once.
func TestReadBookCountsEveryRead(t *testing.T) {
	var b readBook
	q := &request{tok: vault.TokenRecord{ID: "tok"}, name: "a", r: httptest.NewRequest("GET", "/", nil)}
	const workers, each = 4, 5000
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				b.add(q, readCounts{requests: 1, data: 1, bytes: 10})
				if i%500 == 0 {
					time.Sleep(time.Millisecond) // let entries go idle and be retired
				}
			}
		}()
	}
	var total int64
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for stop := false; !stop; {
		select {
		case <-done:
			stop = true
		default:
		}
		now = now.Add(time.Minute)
		for _, e := range b.take(now) {
			var n int64
			fmt.Sscan(e.Params["data_blobs"], &n)
			total += n
		}
	}
	for range 3 {
		for _, e := range b.take(now) {
			var n int64
			fmt.Sscan(e.Params["data_blobs"], &n)
			total += n
		}
	}
	if total != workers*each {
		t.Errorf("summaries count %d reads, want %d", total, workers*each)
	}
}
