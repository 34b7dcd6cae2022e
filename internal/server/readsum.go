package server

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coffer-backup/coffer/internal/audit"
)

// Reads of trees and data, and missing-blob probes (which tell whether a
// vault holds given content), are the bulk requests of a restore or a
// backup: thousands per run, so not an audit entry each. They are summed
// up instead, per token and vault, in one "reads.summary" entry each
// minute (and when the server stops): requests, trees and data blobs
// read, bytes sent, IDs probed and found missing. Counting costs a
// request a lock-free map lookup and a few atomic adds; the entries are
// written by the flush, never on the request's path.
//
// Other successful reads (GET requests) are recorded one by one up to
// readsPerToken a minute per token; past that they are counted in the
// same entry (other_reads), so that polling cannot grow the log faster.

const opReadsSummary = "reads.summary"

type readKey struct{ token, vault string }

type readCounts struct {
	requests, trees, data, bytes, probes, probed, missing int64
	other                                                 int64 // successful reads past the token's budget of entries
}

func (c readCounts) zero() bool { return c == readCounts{} }

type readEntry struct {
	who, src                                              string // the principal, and the address of the first request
	requests, trees, data, bytes, probes, probed, missing atomic.Int64
	other                                                 atomic.Int64
	idle                                                  int // flushes in a row with nothing counted (the flush's own)
	dead                                                  atomic.Bool
}

func (e *readEntry) add(c readCounts) {
	e.requests.Add(c.requests)
	if c.trees != 0 {
		e.trees.Add(c.trees)
	}
	if c.data != 0 {
		e.data.Add(c.data)
	}
	if c.bytes != 0 {
		e.bytes.Add(c.bytes)
	}
	if c.probes != 0 {
		e.probes.Add(c.probes)
		e.probed.Add(c.probed)
		e.missing.Add(c.missing)
	}
	if c.other != 0 {
		e.other.Add(c.other)
	}
}

// take returns the counts and zeroes them; each count is taken once.
func (e *readEntry) take() readCounts {
	return readCounts{requests: e.requests.Swap(0), trees: e.trees.Swap(0), data: e.data.Swap(0), bytes: e.bytes.Swap(0),
		probes: e.probes.Swap(0), probed: e.probed.Swap(0), missing: e.missing.Swap(0), other: e.other.Swap(0)}
}

type readBook struct {
	m     sync.Map // readKey → *readEntry
	mu    sync.Mutex
	since time.Time // start of the period being counted
}

// add counts c for the token and vault of q.
func (b *readBook) add(q *request, c readCounts) {
	k := readKey{q.tok.ID, q.name}
	for {
		v, ok := b.m.Load(k)
		if !ok {
			v, _ = b.m.LoadOrStore(k, &readEntry{who: q.principal(), src: sourceAddr(q.r)})
		}
		e := v.(*readEntry)
		e.add(c)
		if !e.dead.Load() {
			return
		}
		// The flush retired e and took its counts after marking it dead,
		// possibly before this add: what is left moves to a live entry.
		if c = e.take(); c.zero() {
			return
		}
	}
}

// take returns the summary entries of the period ending now. Entries of a
// token idle for two periods are dropped from the map.
func (b *readBook) take(now time.Time) []audit.Entry {
	b.mu.Lock()
	defer b.mu.Unlock()
	since := b.since
	b.since = now
	var out []audit.Entry
	b.m.Range(func(key, v any) bool {
		k, e := key.(readKey), v.(*readEntry)
		c := e.take()
		if c.zero() {
			if e.idle++; e.idle >= 2 {
				b.m.Delete(k)
				e.dead.Store(true)
				c = e.take() // a request that came in meanwhile
			}
		} else {
			e.idle = 0
		}
		if !c.zero() {
			out = append(out, readEntryOf(now, since, k, e, c))
		}
		return true
	})
	return out
}

func readEntryOf(now, since time.Time, k readKey, e *readEntry, c readCounts) audit.Entry {
	p := map[string]string{"token": k.token, "requests": fmt.Sprint(c.requests)}
	if !since.IsZero() {
		p["since"] = since.UTC().Format(time.RFC3339)
	}
	if c.trees != 0 || c.data != 0 || c.bytes != 0 {
		p["trees"], p["data_blobs"], p["bytes"] = fmt.Sprint(c.trees), fmt.Sprint(c.data), fmt.Sprint(c.bytes)
	}
	if c.probes != 0 {
		p["missing_queries"], p["ids_probed"], p["ids_missing"] = fmt.Sprint(c.probes), fmt.Sprint(c.probed), fmt.Sprint(c.missing)
	}
	if c.other != 0 {
		p["other_reads"] = fmt.Sprint(c.other)
	}
	return audit.Entry{Time: now.UTC(), Principal: e.who, Source: e.src, Vault: k.vault, Op: opReadsSummary,
		Outcome: audit.OutcomeOK, Params: p,
		Detail: fmt.Sprintf("%d bulk reads and probes, summed up", c.requests)}
}

// readsPerToken successful GET requests of one token are recorded one by
// one each minute; further ones are counted in its reads.summary.
const readsPerToken = 30

type tokenBudget struct {
	mu     sync.Mutex
	minute time.Time
	n      map[string]int
}

// admit reports whether token's successful read is recorded one by one.
func (b *tokenBudget) admit(token string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if m := now.Truncate(time.Minute); !m.Equal(b.minute) || b.n == nil {
		b.minute, b.n = m, map[string]int{}
	}
	b.n[token]++
	return b.n[token] <= readsPerToken
}
