package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
)

// Limits on what a client can make the server spend before (and while)
// it proves who it is: guesses per address and per principal, password
// hashes at once, and (audit.go) audit entries per address.

// sourceAddr is the client's IP address.
func sourceAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// addrKey is what an address is limited by: an IPv4 address itself, an
// IPv6 address's /64 (one subscriber gets a whole /64 and rotates
// through it for free).
func addrKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// sourceKey is the limiting key of the request's client.
func sourceKey(r *http.Request) string { return addrKey(sourceAddr(r)) }

func (s *Server) tooMany(q *request, lim *limiter, wait time.Duration, key ...string) error {
	secs := int(wait.Round(time.Second) / time.Second)
	if secs < 1 {
		secs = 1
	}
	q.w.Header().Set("Retry-After", fmt.Sprint(secs))
	k := sourceKey(q.r)
	if len(key) > 0 {
		k = key[0]
	}
	q.quiet = !lim.firstRefusal(k)
	if lim == &s.plimiter {
		return fmt.Errorf("%w: too many failed logins for this name; try again in %ds, or from an address that logged in as it before", api.ErrTooManyRequests, secs)
	}
	return fmt.Errorf("%w: too many failed or unauthenticated requests from %s; try again in %ds", api.ErrTooManyRequests, sourceAddr(q.r), secs)
}

// limiter slows down guessing: after limit failures under one key (an
// address, or a principal) within window, the key is refused for a
// while (doubling with each further failure, up to maxBlock) before any
// work is done for it. The zero value limits addresses' failed
// authentications.
type limiter struct {
	mu     sync.Mutex
	m      map[string]*failures
	limit  int           // failures within window before a block; failedLimit when 0
	window time.Duration // failWindow when 0
	base   time.Duration // the first block; baseBlock when 0
	max    time.Duration // the longest block; maxBlock when 0
}

type failures struct {
	n        int
	first    time.Time
	until    time.Time
	reported time.Time // the block (until) whose first refusal was audited
}

const (
	failedLimit = 10
	// anonymousLimit: requests without any token, which guess nothing
	// but cost an audit entry each, are allowed more before a block.
	anonymousLimit = 120
	failWindow     = time.Minute
	baseBlock      = 30 * time.Second
	maxBlock       = 15 * time.Minute

	// A principal's failed logins from all addresses but those it logged
	// in from before: principalLimit within principalWindow block the
	// name for principalBlock, doubling up to principalMaxBlock. The block
	// is bounded so that an attacker cannot lock a user out for longer,
	// and an address the user logged in from within knownFor is never
	// blocked by it.
	principalLimit    = 20
	principalWindow   = 15 * time.Minute
	principalBlock    = 5 * time.Minute
	principalMaxBlock = 15 * time.Minute
	knownFor          = 30 * 24 * time.Hour
	knownPerPrincipal = 8

	// maxLimited bounds a limiter's table: past it, entries whose window
	// and block are over are forgotten.
	maxLimited = 100_000
)

func (l *limiter) params() (limit int, window, base, maxB time.Duration) {
	limit, window, base, maxB = l.limit, l.window, l.base, l.max
	if limit == 0 {
		limit = failedLimit
	}
	if window == 0 {
		window = failWindow
	}
	if base == 0 {
		base = baseBlock
	}
	if maxB == 0 {
		maxB = maxBlock
	}
	return
}

func (l *limiter) blocked(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f := l.m[key]; f != nil && now.Before(f.until) {
		return f.until.Sub(now)
	}
	return 0
}

// firstRefusal reports whether this is the first refusal of key's
// current block: only that one is audited, so that a flood of refused
// requests cannot flood the audit log.
func (l *limiter) firstRefusal(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.m[key]
	if f == nil || f.reported.Equal(f.until) {
		return false
	}
	f.reported = f.until
	return true
}

// fail counts a failure and reports whether key is now blocked.
func (l *limiter) fail(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.count(key, now)
}

func (l *limiter) count(key string, now time.Time) bool {
	limit, window, base, maxB := l.params()
	if l.m == nil {
		l.m = map[string]*failures{}
	}
	f := l.m[key]
	if f == nil || now.Sub(f.first) > window && now.After(f.until) {
		if len(l.m) > maxLimited { // a flood of keys: forget the old ones
			for k, v := range l.m {
				if now.After(v.until) && now.Sub(v.first) > window {
					delete(l.m, k)
				}
			}
		}
		f = &failures{first: now}
		l.m[key] = f
	}
	f.n++
	if f.n >= limit {
		block := base << min(f.n-limit, 5)
		f.until = now.Add(min(block, maxB))
		return true
	}
	return false
}

// attempt counts an attempt before its work is done: it returns how long
// key is blocked (the attempt is not counted then), or 0 when it may go
// on. The attempt that reaches the limit goes on and blocks the next.
func (l *limiter) attempt(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f := l.m[key]; f != nil && now.Before(f.until) {
		return f.until.Sub(now)
	}
	l.count(key, now)
	return 0
}

// refund takes back one attempt that succeeded; a block stays.
func (l *limiter) refund(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f := l.m[key]; f != nil && f.n > 0 {
		f.n--
	}
}

// knownAddrs remembers, per principal, the addresses it logged in from
// recently: the principal's own limit does not apply to them, so that
// guesses from elsewhere cannot lock its user out of where it works.
type knownAddrs struct {
	mu sync.Mutex
	m  map[string][]knownAddr // by principal ID
}

type knownAddr struct {
	key  string
	last time.Time
}

func (k *knownAddrs) has(principal, key string, now time.Time) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, a := range k.m[principal] {
		if a.key == key && now.Sub(a.last) < knownFor {
			return true
		}
	}
	return false
}

func (k *knownAddrs) add(principal, key string, now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[string][]knownAddr{}
	}
	as := k.m[principal]
	oldest := 0
	for i, a := range as {
		if a.key == key {
			as[i].last = now
			return
		}
		if a.last.Before(as[oldest].last) {
			oldest = i
		}
	}
	if len(as) < knownPerPrincipal {
		k.m[principal] = append(as, knownAddr{key, now})
		return
	}
	as[oldest] = knownAddr{key, now}
}

// passwordSlots is how many password hashes run at once: one per core,
// at most 8 (each argon2id hash holds 64 MiB).
func passwordSlots() int { return min(max(runtime.GOMAXPROCS(0), 1), 8) }

// passwordWait is how long a login waits for a free hashing slot before
// it is told to come back.
const passwordWait = time.Second

// passwordSlot takes one of the password-hashing slots, waiting at most
// passwordWait; the server is busy (503, Retry-After) when none frees up.
// release may be called more than once.
func (s *Server) passwordSlot(q *request) (release func(), err error) {
	t := time.NewTimer(passwordWait)
	defer t.Stop()
	select {
	case s.pwSlots <- struct{}{}:
	case <-t.C:
		q.w.Header().Set("Retry-After", "1")
		return nil, fmt.Errorf("%w: too many logins at once; try again in a second", api.ErrUnavailable)
	case <-q.ctx.Done():
		return nil, q.ctx.Err()
	}
	var once sync.Once
	return func() { once.Do(func() { <-s.pwSlots }) }, nil
}

// decodeBudget bounds the bytes that uploads in parallel may hold
// decoding blobs: two of the largest trees the format allows, or 32 of the
// largest chunks (more decodes at once than that would only share the
// cores).
const decodeBudget = 256 << 20

// byteBudget is a weighted semaphore of bytes whose fast path is one
// atomic add: taking bytes that fit costs no lock, and only a taker that
// must wait does more.
type byteBudget struct {
	max     int64
	used    atomic.Int64
	waiters atomic.Int32
	freed   chan struct{} // signalled, without blocking, when bytes are released and someone waits
}

func newByteBudget(max int64) *byteBudget {
	return &byteBudget{max: max, freed: make(chan struct{}, 1)}
}

// acquire takes n bytes (at most the whole budget), waiting while they do
// not fit; it returns what it took, for release.
func (b *byteBudget) acquire(ctx context.Context, n int) (int64, error) {
	m := min(int64(n), b.max)
	if m <= 0 {
		return 0, nil
	}
	for {
		if b.used.Add(m) <= b.max {
			return m, nil
		}
		b.used.Add(-m)
		b.waiters.Add(1)
		t := time.NewTimer(10 * time.Millisecond) // a missed signal costs at most this
		select {
		case <-b.freed:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		b.waiters.Add(-1)
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
}

// release gives back what acquire took.
func (b *byteBudget) release(n int64) {
	if n == 0 {
		return
	}
	b.used.Add(-n)
	if b.waiters.Load() > 0 {
		select {
		case b.freed <- struct{}{}:
		default:
		}
	}
}

// connLimit is a listener that holds at most max connections open per
// address key at once: further ones are closed as soon as accepted,
// before the TLS handshake costs anything.
type connLimit struct {
	net.Listener
	max int
	mu  sync.Mutex
	n   map[string]int
}

func (l *connLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		key := addrKey(host)
		l.mu.Lock()
		if l.n[key] >= l.max {
			l.mu.Unlock()
			c.Close()
			continue
		}
		if l.n == nil {
			l.n = map[string]int{}
		}
		l.n[key]++
		l.mu.Unlock()
		return &limitedConn{Conn: c, l: l, key: key}, nil
	}
}

type limitedConn struct {
	net.Conn
	l    *connLimit
	key  string
	once sync.Once
}

func (c *limitedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		if c.l.n[c.key]--; c.l.n[c.key] <= 0 {
			delete(c.l.n, c.key)
		}
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
