// Package retention decides which snapshots a retention policy keeps, in the
// manner of restic's "forget --keep-*": snapshots are split into groups
// (by host and paths unless told otherwise), every rule of the policy is
// applied to each group on its own, and a snapshot is kept when at least one
// rule keeps it. The package only decides; it never deletes anything.
//
// Semantics, rule by rule, within one group whose snapshots are ordered
// newest first (equal times: lower ID first):
//
//   - Last N keeps the N newest snapshots.
//   - Hourly, Daily, Weekly, Monthly and Yearly N keep the newest snapshot of
//     each of the N newest calendar hours (days, ISO weeks, months, years)
//     that contain a snapshot. Calendar periods are those of
//     Policy.Location (UTC when nil), not periods counted back from now:
//     a day runs from 00:00 to 23:59:59 local time, a week from Monday to
//     Sunday. An hour is a wall-clock hour together with its UTC offset,
//     so on the day the clocks go back the two 01:00–01:59 hours are
//     different hours, while the 23- and 25-hour days are single days.
//   - If a calendar rule has buckets to spare because the group covers fewer
//     periods than asked for (and always for Unlimited), the group's oldest
//     snapshot is kept too ("oldest daily ..."), so a young group keeps its
//     longest history, as restic 0.17 and later do.
//   - Unlimited (-1) in a count rule means every snapshot (Last) or every
//     period (the calendar rules).
//   - Within D keeps every snapshot no older than D before the group's
//     newest snapshot that is not in the future relative to now; snapshots
//     dated after now are kept too. Measuring from the newest snapshot, not
//     from now, is restic's choice and the safe one for a server that
//     applies a stored policy every day: a host that stops backing up keeps
//     its last snapshots instead of watching them age out one by one.
//     Ignoring future snapshots as the reference means one snapshot with a
//     wrong (or forged) future time cannot push every real snapshot out of
//     the window.
//   - Tags keeps every snapshot that carries at least one of the tags.
//
// Nothing else keeps a snapshot: there is no implicit "never remove the
// newest". Every rule except Tags does keep each group's newest snapshot,
// and Apply refuses (ErrRemoveAll) a policy that would remove every
// snapshot of a group, which only a Tags-only policy can do. A policy with
// no rule at all is invalid (ErrEmptyPolicy), so a mistyped flag never
// means "delete everything".
package retention

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/coffer-backup/coffer/internal/vault"
)

// Bounds of a policy's tags: those of a snapshot's (format.CheckSnapshot).
const (
	MaxTags   = 64
	MaxTagLen = 255
)

// Unlimited as a count keeps every snapshot (Last) or every period (the
// calendar rules), like restic's "unlimited".
const Unlimited = -1

// Sentinel errors callers branch on.
var (
	// ErrEmptyPolicy: the policy has no keep rule, so it would remove
	// everything. Validate and Apply return it wrapped.
	ErrEmptyPolicy = errors.New("no keep rule given")
	// ErrRemoveAll: applying the policy would remove every snapshot of at
	// least one group. Apply returns it wrapped, naming the groups.
	ErrRemoveAll = errors.New("policy would remove every snapshot of a group")
)

// Policy is a retention policy. The zero Policy is invalid: at least one
// rule must be given (see ErrEmptyPolicy).
type Policy struct {
	// Counts: 0 leaves the rule unused, Unlimited (-1) keeps all,
	// N > 0 keeps N snapshots or periods.
	Last, Hourly, Daily, Weekly, Monthly, Yearly int
	// Within keeps snapshots no older than Within before the group's newest
	// snapshot that is not in the future. 0 leaves the rule unused. Must be
	// a whole number of hours.
	Within time.Duration
	// Tags keeps every snapshot carrying any of these tags (exact,
	// case-sensitive match). Unlike restic there are no "a,b" lists that
	// need all of their tags.
	Tags []string
	// GroupBy says which snapshot fields form a group; the zero value
	// means host and paths.
	GroupBy GroupBy
	// Location gives the calendar of the hourly … yearly rules; nil means
	// UTC. It is never time.Local implicitly, so a CLI and a server that
	// apply the same stored policy agree.
	Location *time.Location
}

// countRule names one count field of a Policy.
type countRule struct {
	name string // the rule's name in reasons ("daily")
	flag string // the flag that sets it ("--keep-daily")
	n    int
}

func (p Policy) counts() []countRule {
	return []countRule{
		{"last", "--keep-last", p.Last},
		{"hourly", "--keep-hourly", p.Hourly},
		{"daily", "--keep-daily", p.Daily},
		{"weekly", "--keep-weekly", p.Weekly},
		{"monthly", "--keep-monthly", p.Monthly},
		{"yearly", "--keep-yearly", p.Yearly},
	}
}

// Validate reports every problem with p, each naming the flag at fault.
// A policy without any rule wraps ErrEmptyPolicy.
func (p Policy) Validate() error {
	var errs []error
	empty := true
	for _, r := range p.counts() {
		if r.n != 0 {
			empty = false
		}
		if r.n < Unlimited {
			errs = append(errs, fmt.Errorf("%s %d: give a count of at least 1, or -1 (unlimited) to keep all", r.flag, r.n))
		}
	}
	if p.Within != 0 {
		empty = false
	}
	switch {
	case p.Within < 0:
		errs = append(errs, fmt.Errorf("--keep-within %s: must not be negative", p.Within))
	case p.Within%time.Hour != 0:
		errs = append(errs, fmt.Errorf("--keep-within %s: must be a whole number of hours, such as 36h or 30d", p.Within))
	}
	if len(p.Tags) > 0 {
		empty = false
	}
	if len(p.Tags) > MaxTags {
		errs = append(errs, fmt.Errorf("--keep-tag given %d times: at most %d", len(p.Tags), MaxTags))
	}
	seen := make(map[string]bool, len(p.Tags))
	for _, t := range p.Tags {
		switch {
		case t == "":
			errs = append(errs, errors.New("--keep-tag: empty tag; give the tag to keep"))
		case seen[t]:
			errs = append(errs, fmt.Errorf("--keep-tag %q: given twice", t))
		case len(t) > MaxTagLen || !utf8.ValidString(t) || strings.ContainsFunc(t, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }):
			// As a snapshot's tags: no tag that could match is refused.
			errs = append(errs, fmt.Errorf("--keep-tag %q: want printable UTF-8 of at most %d bytes", t, MaxTagLen))
		}
		seen[t] = true
	}
	if err := p.GroupBy.validate(); err != nil {
		errs = append(errs, err)
	}
	if empty {
		errs = append(errs, fmt.Errorf("%w: give at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly, --keep-within, --keep-tag (-1 keeps all)", ErrEmptyPolicy))
	}
	return errors.Join(errs...)
}

// String describes p as the flags that would set it, for logs and dry runs,
// e.g. "--keep-daily 7 --keep-within 30d --group-by host,paths".
func (p Policy) String() string {
	var parts []string
	for _, r := range p.counts() {
		switch {
		case r.n == Unlimited:
			parts = append(parts, r.flag+" -1") // the flags take -1 for unlimited
		case r.n != 0:
			parts = append(parts, r.flag+" "+strconv.Itoa(r.n))
		}
	}
	if p.Within != 0 {
		parts = append(parts, "--keep-within "+FormatDuration(p.Within))
	}
	for _, t := range p.Tags {
		parts = append(parts, "--keep-tag "+quoteIfNeeded(t))
	}
	parts = append(parts, "--group-by "+p.GroupBy.String())
	if p.Location != nil {
		parts = append(parts, "(calendar "+p.Location.String()+")")
	}
	return strings.Join(parts, " ")
}

// HostGrouped returns p grouped by host as well as by what it names
// ("none" becomes "host"). A vault server applies every stored policy so
// (policies stored before it refused others included): an agent can write
// only into its own host's group, but could crowd a group that ignores
// hosts.
func (p Policy) HostGrouped() Policy {
	switch {
	case p.GroupBy == 0:
	case p.GroupBy == GroupByNone:
		p.GroupBy = GroupByHost
	default:
		p.GroupBy |= GroupByHost
	}
	return p
}

// GroupBy is a set of snapshot fields; snapshots with equal values in all
// of them form one group. The zero value means DefaultGroupBy.
type GroupBy uint8

// GroupBy fields. GroupByNone puts all snapshots in one group and cannot be
// combined with the others.
const (
	GroupByHost GroupBy = 1 << iota
	GroupByPaths
	GroupByTags
	GroupByNone

	DefaultGroupBy = GroupByHost | GroupByPaths
)

var groupByNames = []struct {
	name string
	g    GroupBy
}{{"host", GroupByHost}, {"paths", GroupByPaths}, {"tags", GroupByTags}}

// ParseGroupBy parses a comma-separated list of "host", "paths" and "tags",
// or "none" for a single group. The empty string gives the zero value,
// which means DefaultGroupBy (host,paths). This differs from restic, where
// an empty --group-by means no grouping: here an unset or empty setting can
// never merge every host into one group and let one host's snapshots
// crowd out another's; ask for that with "none".
func ParseGroupBy(s string) (GroupBy, error) {
	if strings.TrimSpace(s) == "" {
		return 0, nil
	}
	var g GroupBy
	for field := range strings.SplitSeq(s, ",") {
		field = strings.TrimSpace(field)
		var f GroupBy
		switch field {
		case "host":
			f = GroupByHost
		case "paths":
			f = GroupByPaths
		case "tags":
			f = GroupByTags
		case "none":
			f = GroupByNone
		case "":
			return 0, fmt.Errorf("--group-by %q: empty field; give a comma-separated list of host, paths, tags, or none", s)
		default:
			return 0, fmt.Errorf("--group-by %q: unknown field %q; give a comma-separated list of host, paths, tags, or none", s, field)
		}
		if g&f != 0 {
			return 0, fmt.Errorf("--group-by %q: %s given twice", s, field)
		}
		g |= f
	}
	if err := g.validate(); err != nil {
		return 0, err
	}
	return g, nil
}

func (g GroupBy) validate() error {
	switch {
	case g&^(GroupByHost|GroupByPaths|GroupByTags|GroupByNone) != 0:
		return fmt.Errorf("--group-by: invalid value %#x", uint8(g))
	case g&GroupByNone != 0 && g != GroupByNone:
		return errors.New("--group-by: none cannot be combined with host, paths or tags")
	}
	return nil
}

func (g GroupBy) effective() GroupBy {
	if g == 0 {
		return DefaultGroupBy
	}
	return g
}

// String returns g in the form ParseGroupBy reads: "host,paths", "tags",
// "none". The zero value prints as "host,paths".
func (g GroupBy) String() string {
	g = g.effective()
	if g == GroupByNone {
		return "none"
	}
	var names []string
	for _, n := range groupByNames {
		if g&n.g != 0 {
			names = append(names, n.name)
		}
	}
	if rest := g &^ (GroupByHost | GroupByPaths | GroupByTags); rest != 0 {
		names = append(names, fmt.Sprintf("%#x", uint8(rest)))
	}
	return strings.Join(names, ",")
}

// Decision is the verdict on one snapshot. A kept snapshot has one reason
// per rule that keeps it, in the order last, hourly, daily, weekly,
// monthly, yearly, within, tags; a removed one has none. Reasons read like
// "last #2", "hourly 2026-11-25 14:00 UTC", "daily 2026-11-25",
// "weekly 2026-W48", "monthly 2026-11", "yearly 2026",
// "oldest daily 2026-11-20", "within 30d", "within 30d (future)",
// "tag prod".
type Decision struct {
	Snapshot vault.SnapshotRecord
	Keep     bool
	Reasons  []string
}

// Group is one group's decisions, newest snapshot first (equal times:
// lower ID first). Key names the group for people, with the grouped fields
// in the order host, paths, tags: `host=web01 paths=/etc,/srv`. Paths and
// tags are sorted and deduplicated; a value that is empty or holds a space,
// comma, '=', quote or unprintable character is quoted Go-style, so
// distinct groups have distinct keys. Without grouping (GroupByNone) the
// key is "".
type Group struct {
	Key       string
	Decisions []Decision
}

// Apply decides which of snaps p keeps. now is the current time, used only
// to recognise snapshots dated in the future (see the package comment); it
// must not be the zero time. Groups are sorted by Key. Apply does not
// modify snaps. It returns an error if p is invalid, if two snapshots share
// an ID, or (wrapping ErrRemoveAll) if p would remove every snapshot of a
// group. An empty snaps gives no groups and no error.
func Apply(p Policy, snaps []vault.SnapshotRecord, now time.Time) ([]Group, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if now.IsZero() {
		return nil, errors.New("apply retention policy: now is the zero time; pass the current time")
	}
	gb := p.GroupBy.effective()
	loc := p.Location
	if loc == nil {
		loc = time.UTC
	}

	ids := make(map[vault.ID]bool, len(snaps))
	byKey := make(map[string][]vault.SnapshotRecord)
	for _, s := range snaps {
		if ids[s.ID] {
			return nil, fmt.Errorf("apply retention policy: snapshot %s listed twice", s.ID)
		}
		ids[s.ID] = true
		k := groupKey(gb, s)
		byKey[k] = append(byKey[k], s)
	}

	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	slices.Sort(keys)

	groups := make([]Group, 0, len(keys))
	var emptied []error
	for _, k := range keys {
		list := byKey[k]
		slices.SortFunc(list, newestFirst)
		g := Group{Key: k, Decisions: decide(p, list, loc, now)}
		if !slices.ContainsFunc(g.Decisions, func(d Decision) bool { return d.Keep }) {
			emptied = append(emptied, fmt.Errorf("group %q: %w: no rule keeps any of its %d snapshots; add a rule such as --keep-last 1", k, ErrRemoveAll, len(list)))
		}
		groups = append(groups, g)
	}
	if len(emptied) > 0 {
		return nil, errors.Join(emptied...)
	}
	return groups, nil
}

// newestFirst orders snapshots by time, newest first, then by ID.
func newestFirst(a, b vault.SnapshotRecord) int {
	if c := b.Time.Compare(a.Time); c != 0 {
		return c
	}
	return bytes.Compare(a.ID[:], b.ID[:])
}

// bucketer names the calendar period of t (already in the policy's
// location). key identifies the period; label is what people read.
type bucketer func(t time.Time) (key, label string)

func hourBucket(t time.Time) (string, string) {
	// The UTC offset is part of the key so the repeated hour on the day
	// the clocks go back is a second, distinct hour.
	_, off := t.Zone()
	label := t.Format("2006-01-02 15:00 MST")
	return label + " " + strconv.Itoa(off), label
}

func dayBucket(t time.Time) (string, string) {
	s := t.Format("2006-01-02")
	return s, s
}

func weekBucket(t time.Time) (string, string) {
	y, w := t.ISOWeek()
	s := fmt.Sprintf("%04d-W%02d", y, w)
	return s, s
}

func monthBucket(t time.Time) (string, string) {
	s := t.Format("2006-01")
	return s, s
}

func yearBucket(t time.Time) (string, string) {
	s := t.Format("2006")
	return s, s
}

// decide applies p to one group sorted newest first.
func decide(p Policy, list []vault.SnapshotRecord, loc *time.Location, now time.Time) []Decision {
	ds := make([]Decision, len(list))
	for i, s := range list {
		ds[i].Snapshot = s
	}
	keep := func(i int, reason string) {
		ds[i].Keep = true
		ds[i].Reasons = append(ds[i].Reasons, reason)
	}

	if p.Last != 0 {
		for i := range list {
			if p.Last != Unlimited && i >= p.Last {
				break
			}
			keep(i, "last #"+strconv.Itoa(i+1))
		}
	}

	calendar := []struct {
		rule   countRule
		bucket bucketer
	}{
		{countRule{name: "hourly", n: p.Hourly}, hourBucket},
		{countRule{name: "daily", n: p.Daily}, dayBucket},
		{countRule{name: "weekly", n: p.Weekly}, weekBucket},
		{countRule{name: "monthly", n: p.Monthly}, monthBucket},
		{countRule{name: "yearly", n: p.Yearly}, yearBucket},
	}
	for _, c := range calendar {
		n := c.rule.n
		if n == 0 || len(list) == 0 {
			continue
		}
		// A set, not "differs from the previous snapshot's period", so a
		// period is counted once even if it were not contiguous in time.
		seen := make(map[string]bool)
		lastKept := -1
		for i, s := range list {
			if n != Unlimited && len(seen) == n {
				break
			}
			key, label := c.bucket(s.Time.In(loc))
			if seen[key] {
				continue
			}
			seen[key] = true
			keep(i, c.rule.name+" "+label)
			lastKept = i
		}
		// Buckets to spare: keep the oldest snapshot too, so the history
		// reaches as far back as the group does.
		if oldest := len(list) - 1; (n == Unlimited || len(seen) < n) && lastKept != oldest {
			_, label := c.bucket(list[oldest].Time.In(loc))
			keep(oldest, "oldest "+c.rule.name+" "+label)
		}
	}

	if p.Within > 0 {
		label := "within " + FormatDuration(p.Within)
		// The reference is the newest snapshot not in the future.
		ref := -1
		for i, s := range list {
			if !s.Time.After(now) {
				ref = i
				break
			}
		}
		for i, s := range list {
			switch {
			case s.Time.After(now):
				keep(i, label+" (future)")
			case ref >= 0 && !s.Time.Before(list[ref].Time.Add(-p.Within)):
				keep(i, label)
			}
		}
	}

	for _, t := range p.Tags {
		for i, s := range list {
			if slices.Contains(s.Tags, t) {
				keep(i, "tag "+t)
			}
		}
	}
	return ds
}

// groupKey builds the human-readable, collision-free key of s's group.
func groupKey(gb GroupBy, s vault.SnapshotRecord) string {
	var parts []string
	if gb&GroupByHost != 0 {
		parts = append(parts, "host="+quoteIfNeeded(s.Host))
	}
	if gb&GroupByPaths != 0 {
		parts = append(parts, "paths="+setString(s.Paths))
	}
	if gb&GroupByTags != 0 {
		parts = append(parts, "tags="+setString(s.Tags))
	}
	return strings.Join(parts, " ")
}

// setString renders a list as a sorted, deduplicated, comma-separated set.
// An empty list renders as "", a list holding only "" as `""`.
func setString(list []string) string {
	sorted := slices.Clone(list) // never reorder the caller's slices
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	for i, v := range sorted {
		sorted[i] = quoteIfNeeded(v)
	}
	return strings.Join(sorted, ",")
}

// quoteIfNeeded returns s unchanged when it is non-empty and cannot be
// confused with the key syntax, else Go-quoted.
func quoteIfNeeded(s string) string {
	if s == "" || !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool {
		return r == ',' || r == '=' || r == '"' || r == '\\' || unicode.IsSpace(r) || !unicode.IsPrint(r)
	}) {
		return strconv.Quote(s)
	}
	return s
}

// durationUnit is one unit ParseDuration accepts.
type durationUnit struct {
	unit string
	d    time.Duration
}

// durationUnits are the units ParseDuration accepts, largest first.
func durationUnits() []durationUnit {
	return []durationUnit{
		{"y", 365 * 24 * time.Hour},
		{"m", 30 * 24 * time.Hour},
		{"w", 7 * 24 * time.Hour},
		{"d", 24 * time.Hour},
		{"h", time.Hour},
	}
}

// ParseDuration parses a --keep-within duration: one or more
// <integer><unit> with units from largest to smallest, each at most once:
// y (365 days), m (month, 30 days), w (7 days), d (24 hours), h (hour).
// "30d", "2w", "1y2m3d", "36h" and "720h" are valid. As in restic, m means
// months, so Go durations with minutes or seconds ("1h30m", "90s") and
// fractions ("1.5h") are rejected rather than read differently from what
// Go would mean; Go durations in whole hours ("720h") work. The fixed
// unit lengths make 1y one day short of a calendar year across a leap
// day. Negative, empty and overflowing durations are errors.
func ParseDuration(s string) (time.Duration, error) {
	orig := s
	if s == "" {
		return 0, errors.New(`--keep-within: empty duration; give one such as "30d" or "1y6m"`)
	}
	fail := func(why string) (time.Duration, error) {
		return 0, fmt.Errorf("--keep-within %q: %s; give a duration such as 30d, 2w, 36h or 1y2m3d (units y=365d, m=30d, w, d, h, largest first)", orig, why)
	}
	units := durationUnits()
	var total time.Duration
	next := 0 // index into units of the largest unit still allowed
	for s != "" {
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == 0 {
			if s[0] == '-' {
				return fail("must not be negative")
			}
			return fail(fmt.Sprintf("expected a number at %q", s))
		}
		if i == len(s) {
			return fail(fmt.Sprintf("number %s has no unit", s[:i]))
		}
		n, err := strconv.ParseInt(s[:i], 10, 64)
		if err != nil {
			return fail("number too large")
		}
		rest := s[i:]
		k := strings.IndexFunc(rest, func(r rune) bool { return r >= '0' && r <= '9' })
		if k < 0 {
			k = len(rest)
		}
		u := rest[:k]
		s = rest[k:]
		j := slices.IndexFunc(units, func(d durationUnit) bool { return d.unit == u })
		switch {
		case j < 0 && slices.Contains([]string{"s", "ms", "us", "µs", "ns", "min", "."}, u):
			return fail("only whole hours or larger units are supported")
		case j < 0:
			return fail(fmt.Sprintf("unknown unit %q", u))
		case j < next && u == "m":
			return fail(`"m" means months here and must come before w, d and h; minutes are not supported`)
		case j < next:
			return fail(fmt.Sprintf("unit %q out of order or repeated", u))
		}
		next = j + 1
		unit := units[j].d
		if n > int64(time.Duration(1<<63-1)/unit) {
			return fail("too long")
		}
		part := time.Duration(n) * unit
		if total > time.Duration(1<<63-1)-part {
			return fail("too long")
		}
		total += part
	}
	return total, nil
}

// FormatDuration renders d as ParseDuration reads it, in days and hours:
// 720h → "30d", 36h → "1d12h", 0 → "0h". A negative d or one that is not
// a whole number of hours is rendered in Go's syntax (time.Duration.String),
// which ParseDuration rejects; Validate rejects such a Within anyway.
func FormatDuration(d time.Duration) string {
	if d < 0 || d%time.Hour != 0 {
		return d.String()
	}
	h := int64(d / time.Hour)
	days, hours := h/24, h%24
	switch {
	case days == 0:
		return strconv.FormatInt(hours, 10) + "h"
	case hours == 0:
		return strconv.FormatInt(days, 10) + "d"
	default:
		return strconv.FormatInt(days, 10) + "d" + strconv.FormatInt(hours, 10) + "h"
	}
}
