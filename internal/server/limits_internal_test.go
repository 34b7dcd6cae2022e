package server

import (
	"testing"
	"time"
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
