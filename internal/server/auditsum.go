package server

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coffer-backup/coffer/internal/audit"
)

// What the audit log counts rather than records one by one, so that
// nobody can make it grow faster than a bounded rate: refused requests
// past a few a minute per address (a flood), summed up in one entry per
// address and minute, and past a bound of those, in one entry for all
// the other addresses.

const (
	// refusalsPerAddr refused requests of one address (an IPv4 address,
	// an IPv6 /64) are recorded one by one each minute,
	// refusalsPerMinute of all addresses.
	refusalsPerAddr   = 10
	refusalsPerMinute = 100
	// refusalSummaries addresses get a summary entry of their own each
	// minute (those with the most refusals); the rest share one.
	refusalSummaries = 20
	// maxCounted bounds the addresses counted one by one in a minute;
	// the refusals of further addresses count only in the shared entry.
	maxCounted = 10_000
	// Echoed details of a refused request are cut to these lengths: the
	// request was refused, and its content is the client's choice.
	maxRefusalParam  = 128
	maxRefusalDetail = 256
	maxRefusalParams = 16
	// Query parameters recorded of any request, each cut to
	// maxRefusalParam.
	maxQueryParams = 8
)

// Summary entries' operations.
const (
	opRefusedSummary = "refused.summary"
)

type refusalBook struct {
	mu     sync.Mutex
	minute time.Time // the minute whose budgets are being spent
	total  int       // refusals recorded one by one this minute
	per    map[string]*refusalCount
	others refusalCount // addresses past maxCounted
	extra  int          // refusals seen past maxCounted addresses
}

type refusalCount struct {
	recorded int
	counted  int // refused requests not recorded one by one
	denied   int // of counted, those denied (401, 403, 429)
	ops      map[string]int
}

func (c *refusalCount) add(op string, denied bool) {
	c.counted++
	if denied {
		c.denied++
	}
	if c.ops == nil {
		c.ops = map[string]int{}
	}
	if _, ok := c.ops[op]; ok || len(c.ops) < 4 {
		c.ops[op]++
	}
}

func (c *refusalCount) merge(o *refusalCount) {
	c.counted += o.counted
	c.denied += o.denied
	if c.ops == nil {
		c.ops = map[string]int{}
	}
	for op, n := range o.ops {
		if _, ok := c.ops[op]; ok || len(c.ops) < 4 {
			c.ops[op] += n
		}
	}
}

// admit reports whether a refused request from key (op, denied or
// otherwise refused) is recorded one by one; when not, it is counted for
// the summary. quiet: counted whatever the budget. Summaries of an
// earlier minute that are due are returned for the caller to append.
func (b *refusalBook) admit(key, op string, denied, quiet bool, now time.Time) (record bool, due []audit.Entry) {
	b.mu.Lock()
	defer b.mu.Unlock()
	minute := now.Truncate(time.Minute)
	if !minute.Equal(b.minute) {
		due = b.takeLocked(now)
		b.minute = minute
	}
	if b.per == nil {
		b.per = map[string]*refusalCount{}
	}
	c := b.per[key]
	if c == nil {
		if len(b.per) >= maxCounted {
			b.extra++
			b.others.add(op, denied)
			return false, due
		}
		c = &refusalCount{}
		b.per[key] = c
	}
	if !quiet && c.recorded < refusalsPerAddr && b.total < refusalsPerMinute {
		c.recorded++
		b.total++
		return true, due
	}
	c.add(op, denied)
	return false, due
}

// take returns the summary entries of what was counted and starts afresh.
func (b *refusalBook) take(now time.Time) []audit.Entry {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.minute = now.Truncate(time.Minute)
	return b.takeLocked(now)
}

func (b *refusalBook) takeLocked(now time.Time) []audit.Entry {
	since := b.minute
	keys := make([]string, 0, len(b.per))
	for k, c := range b.per {
		if c.counted > 0 {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		ci, cj := b.per[keys[i]].counted, b.per[keys[j]].counted
		return ci > cj || ci == cj && keys[i] < keys[j]
	})
	var out []audit.Entry
	rest, restAddrs := b.others, 0
	if b.extra > 0 {
		restAddrs = -1 // unknown: more addresses than were counted one by one
	}
	for i, k := range keys {
		c := b.per[k]
		if i < refusalSummaries {
			out = append(out, refusalEntry(now, since, k, fmt.Sprintf("%d refused requests from %s were not recorded one by one", c.counted, k), c))
			continue
		}
		rest.merge(c)
		if restAddrs >= 0 {
			restAddrs++
		}
	}
	if rest.counted > 0 {
		addrs := fmt.Sprint(restAddrs)
		if restAddrs < 0 {
			addrs = "more than " + fmt.Sprint(maxCounted-refusalSummaries)
		}
		e := refusalEntry(now, since, "", fmt.Sprintf("%d refused requests from %s other addresses were not recorded one by one", rest.counted, addrs), &rest)
		e.Params["addresses"] = addrs
		out = append(out, e)
	}
	b.per, b.others, b.extra, b.total = nil, refusalCount{}, 0, 0
	return out
}

func refusalEntry(now, since time.Time, src, detail string, c *refusalCount) audit.Entry {
	ops := make([]string, 0, len(c.ops))
	for op, n := range c.ops {
		ops = append(ops, fmt.Sprintf("%s ×%d", op, n))
	}
	sort.Strings(ops)
	outcome := audit.OutcomeRefused
	if c.denied == c.counted {
		outcome = audit.OutcomeDenied
	}
	return audit.Entry{Time: now.UTC(), Principal: serverPrincipal, Source: src, Op: opRefusedSummary, Outcome: outcome,
		Params: map[string]string{"refused": fmt.Sprint(c.counted), "denied": fmt.Sprint(c.denied),
			"since": since.UTC().Format(time.RFC3339), "ops": strings.Join(ops, ", ")},
		Detail: detail}
}

// FlushAuditSummaries writes the summaries of what was counted rather
// than recorded one by one (bulk reads and probes, refused floods); the server does every minute and when it
// stops.
func (s *Server) FlushAuditSummaries(ctx context.Context) error {
	now := s.opt.Now()
	for _, e := range s.reads.take(now) {
		s.appendAudit(ctx, e)
	}
	for _, e := range s.refusals.take(now) {
		s.appendAudit(ctx, e)
	}
	return nil
}

// summaryLoop flushes the summaries every minute until ctx is done.
func (s *Server) summaryLoop(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.FlushAuditSummaries(ctx)
		}
	}
}

// cut shortens s to at most n bytes on a rune boundary, marking the cut.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	m := n - len(mark)
	for m > 0 && !utf8.RuneStart(s[m]) {
		m--
	}
	return s[:m] + mark
}
