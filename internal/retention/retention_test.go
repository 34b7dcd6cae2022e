package retention

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // Europe/London and friends even where the OS has no zoneinfo

	"github.com/coffer-backup/coffer/internal/vault"
)

// snap describes a test snapshot; its ID is the bytes of name.
type snap struct {
	name  string
	time  string // RFC 3339
	host  string
	paths []string
	tags  []string
}

func idOf(name string) vault.ID {
	var id vault.ID
	copy(id[:], name)
	return id
}

func nameOf(id vault.ID) string { return string(bytes.TrimRight(id[:], "\x00")) }

func at(tb testing.TB, s string) time.Time {
	tb.Helper()
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		tb.Fatalf("bad test time %q: %v", s, err)
	}
	return t
}

func records(tb testing.TB, ss []snap) []vault.SnapshotRecord {
	tb.Helper()
	out := make([]vault.SnapshotRecord, len(ss))
	for i, s := range ss {
		host, paths := s.host, s.paths
		if host == "" {
			host = "web01"
		}
		if paths == nil {
			paths = []string{"/srv"}
		}
		out[i] = vault.SnapshotRecord{ID: idOf(s.name), Time: at(tb, s.time), Host: host, Paths: paths, Tags: s.tags}
	}
	return out
}

func loadLocation(tb testing.TB, name string) *time.Location {
	tb.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		tb.Skipf("time zone %s unavailable: %v", name, err) // unreachable with time/tzdata
	}
	return loc
}

// kept maps the name of every kept snapshot to its reasons, and checks
// that removed snapshots have no reasons.
func kept(tb testing.TB, groups []Group) map[string][]string {
	tb.Helper()
	out := map[string][]string{}
	for _, g := range groups {
		for _, d := range g.Decisions {
			if d.Keep != (len(d.Reasons) > 0) {
				tb.Errorf("snapshot %s: Keep=%v with reasons %q", nameOf(d.Snapshot.ID), d.Keep, d.Reasons)
			}
			if d.Keep {
				out[nameOf(d.Snapshot.ID)] = d.Reasons
			}
		}
	}
	return out
}

var now = time.Date(2026, 11, 11, 0, 0, 0, 0, time.UTC)

// history is one group's snapshots, in no particular order.
var history = []snap{
	{name: "g", time: "2026-10-31T12:00:00Z"}, // Sat, W44
	{name: "a", time: "2026-11-10T22:00:00Z"}, // Tue, W46
	{name: "c", time: "2026-11-09T23:59:59Z"}, // Mon, W46
	{name: "i", time: "2025-06-01T12:00:00Z"}, // Sun, 2025-W22
	{name: "b", time: "2026-11-10T08:00:00Z"},
	{name: "d", time: "2026-11-09T00:00:00Z"},
	{name: "e", time: "2026-11-08T12:00:00Z"}, // Sun, W45
	{name: "f", time: "2026-11-02T12:00:00Z"}, // Mon, W45
	{name: "h", time: "2025-12-31T12:00:00Z"}, // Wed, ISO week 2026-W01
}

func TestApplyRules(t *testing.T) {
	tagged := slices.Clone(history)
	tagged[4].tags = []string{"prod"}       // b
	tagged[0].tags = []string{"db", "prod"} // g
	future := append(slices.Clone(history), snap{name: "z", time: "2027-01-01T00:00:00Z"})

	tests := []struct {
		name  string
		snaps []snap
		p     Policy
		now   time.Time
		want  map[string][]string
	}{
		{"last 3", history, Policy{Last: 3}, now, map[string][]string{
			"a": {"last #1"}, "b": {"last #2"}, "c": {"last #3"},
		}},
		{"last more than there are", history[:2], Policy{Last: 5}, now, map[string][]string{
			"a": {"last #1"}, "g": {"last #2"},
		}},
		{"last unlimited", history, Policy{Last: Unlimited}, now, map[string][]string{
			"a": {"last #1"}, "b": {"last #2"}, "c": {"last #3"}, "d": {"last #4"}, "e": {"last #5"},
			"f": {"last #6"}, "g": {"last #7"}, "h": {"last #8"}, "i": {"last #9"},
		}},
		{"hourly 3", history, Policy{Hourly: 3}, now, map[string][]string{
			"a": {"hourly 2026-11-10 22:00 UTC"}, "b": {"hourly 2026-11-10 08:00 UTC"}, "c": {"hourly 2026-11-09 23:00 UTC"},
		}},
		{"daily 2 takes the newest of each day", history, Policy{Daily: 2}, now, map[string][]string{
			"a": {"daily 2026-11-10"}, "c": {"daily 2026-11-09"},
		}},
		{"daily 4 counts only days with snapshots", history, Policy{Daily: 4}, now, map[string][]string{
			"a": {"daily 2026-11-10"}, "c": {"daily 2026-11-09"}, "e": {"daily 2026-11-08"}, "f": {"daily 2026-11-02"},
		}},
		{"weekly 2", history, Policy{Weekly: 2}, now, map[string][]string{
			"a": {"weekly 2026-W46"}, "e": {"weekly 2026-W45"},
		}},
		{"weekly uses the ISO week-year", history, Policy{Weekly: 5}, now, map[string][]string{
			"a": {"weekly 2026-W46"}, "e": {"weekly 2026-W45"}, "g": {"weekly 2026-W44"},
			"h": {"weekly 2026-W01"}, "i": {"weekly 2025-W22"},
		}},
		{"monthly 2", history, Policy{Monthly: 2}, now, map[string][]string{
			"a": {"monthly 2026-11"}, "g": {"monthly 2026-10"},
		}},
		{"monthly unlimited, oldest already kept", history, Policy{Monthly: Unlimited}, now, map[string][]string{
			"a": {"monthly 2026-11"}, "g": {"monthly 2026-10"}, "h": {"monthly 2025-12"}, "i": {"monthly 2025-06"},
		}},
		{"yearly 2 exactly the years there are", history, Policy{Yearly: 2}, now, map[string][]string{
			"a": {"yearly 2026"}, "h": {"yearly 2025"},
		}},
		{"yearly 5 keeps the oldest too", history, Policy{Yearly: 5}, now, map[string][]string{
			"a": {"yearly 2026"}, "h": {"yearly 2025"}, "i": {"oldest yearly 2025"},
		}},
		{"yearly unlimited keeps the oldest too", history, Policy{Yearly: Unlimited}, now, map[string][]string{
			"a": {"yearly 2026"}, "h": {"yearly 2025"}, "i": {"oldest yearly 2025"},
		}},
		{"daily spare buckets in a young group", history[1:3], Policy{Daily: 7}, now, map[string][]string{
			"a": {"daily 2026-11-10"}, "c": {"daily 2026-11-09"},
		}},
		{"within 2d of the newest", history, Policy{Within: 48 * time.Hour}, now, map[string][]string{
			"a": {"within 2d"}, "b": {"within 2d"}, "c": {"within 2d"}, "d": {"within 2d"},
		}},
		{"within boundary is inclusive", history, Policy{Within: 46 * time.Hour}, now, map[string][]string{
			"a": {"within 1d22h"}, "b": {"within 1d22h"}, "c": {"within 1d22h"}, "d": {"within 1d22h"},
		}},
		{"within just short of a snapshot", history, Policy{Within: 45 * time.Hour}, now, map[string][]string{
			"a": {"within 1d21h"}, "b": {"within 1d21h"}, "c": {"within 1d21h"},
		}},
		{"within measures from the newest, not from now", history, Policy{Within: 48 * time.Hour},
			time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), map[string][]string{
				"a": {"within 2d"}, "b": {"within 2d"}, "c": {"within 2d"}, "d": {"within 2d"},
			}},
		{"within ignores and keeps future snapshots", future, Policy{Within: 48 * time.Hour}, now, map[string][]string{
			"z": {"within 2d (future)"},
			"a": {"within 2d"}, "b": {"within 2d"}, "c": {"within 2d"}, "d": {"within 2d"},
		}},
		{"within when every snapshot is in the future", history[1:3], Policy{Within: time.Hour},
			time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), map[string][]string{
				"a": {"within 1h (future)"}, "c": {"within 1h (future)"},
			}},
		{"tags, any of", tagged, Policy{Tags: []string{"prod", "db"}}, now, map[string][]string{
			"b": {"tag prod"}, "g": {"tag prod", "tag db"},
		}},
		{"tags are exact", tagged, Policy{Tags: []string{"db"}, Last: 1}, now, map[string][]string{
			"a": {"last #1"}, "g": {"tag db"},
		}},
		{"combination lists every reason", tagged, Policy{Last: 1, Daily: 3, Weekly: 2, Monthly: 3, Yearly: 1, Tags: []string{"prod"}}, now,
			map[string][]string{
				"a": {"last #1", "daily 2026-11-10", "weekly 2026-W46", "monthly 2026-11", "yearly 2026"},
				"b": {"tag prod"},
				"c": {"daily 2026-11-09"},
				"e": {"daily 2026-11-08", "weekly 2026-W45"},
				"g": {"monthly 2026-10", "tag prod"},
				"h": {"monthly 2025-12"},
			}},
		{"combination with within and unlimited", history, Policy{Last: 2, Within: 24 * time.Hour, Yearly: Unlimited}, now,
			map[string][]string{
				"a": {"last #1", "yearly 2026", "within 1d"},
				"b": {"last #2", "within 1d"},
				"c": {"within 1d"},
				"h": {"yearly 2025"},
				"i": {"oldest yearly 2025"},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			groups, err := Apply(tt.p, records(t, tt.snaps), tt.now)
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if len(groups) != 1 {
				t.Fatalf("got %d groups, want 1", len(groups))
			}
			if got := kept(t, groups); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("kept:\n got %q\nwant %q", got, tt.want)
			}
			if n := len(groups[0].Decisions); n != len(tt.snaps) {
				t.Errorf("got %d decisions, want %d", n, len(tt.snaps))
			}
		})
	}
}

// TestCalendarBoundaries puts two snapshots close together and checks
// whether a calendar rule sees one period or two. A third, much older
// snapshot takes the "oldest" reason out of the way.
func TestCalendarBoundaries(t *testing.T) {
	london := loadLocation(t, "Europe/London")
	newYork := loadLocation(t, "America/New_York")
	tokyo := loadLocation(t, "Asia/Tokyo")
	tests := []struct {
		name         string
		p            Policy
		newer, older string
		wantNewer    string
		wantOlder    string // "" when both fall in the same period
	}{
		{"day ends at 23:59:59 UTC", Policy{Daily: Unlimited}, "2026-11-10T00:00:00Z", "2026-11-09T23:59:59Z",
			"daily 2026-11-10", "daily 2026-11-09"},
		{"day spans 00:00 to 23:59:59 UTC", Policy{Daily: Unlimited}, "2026-11-09T23:59:59Z", "2026-11-09T00:00:00Z",
			"daily 2026-11-09", ""},
		{"local midnight in New York", Policy{Daily: Unlimited, Location: newYork}, "2026-11-10T05:30:00Z", "2026-11-10T04:30:00Z",
			"daily 2026-11-10", "daily 2026-11-09"},
		{"same UTC instants in UTC are one day", Policy{Daily: Unlimited}, "2026-11-10T05:30:00Z", "2026-11-10T04:30:00Z",
			"daily 2026-11-10", ""},
		{"London spring forward: midnight BST", Policy{Daily: Unlimited, Location: london}, "2026-03-29T23:30:00Z", "2026-03-29T22:30:00Z",
			"daily 2026-03-30", "daily 2026-03-29"},
		{"London spring forward: 23-hour day", Policy{Daily: Unlimited, Location: london}, "2026-03-29T22:59:59Z", "2026-03-29T00:00:00Z",
			"daily 2026-03-29", ""},
		{"London spring forward: 01:00 GMT becomes 02:00 BST", Policy{Hourly: Unlimited, Location: london}, "2026-03-29T01:00:00Z", "2026-03-29T00:59:59Z",
			"hourly 2026-03-29 02:00 BST", "hourly 2026-03-29 00:00 GMT"},
		{"London fall back: repeated 01:00 hour is two hours", Policy{Hourly: Unlimited, Location: london}, "2026-10-25T01:30:00Z", "2026-10-25T00:30:00Z",
			"hourly 2026-10-25 01:00 GMT", "hourly 2026-10-25 01:00 BST"},
		{"London fall back: 25-hour day", Policy{Daily: Unlimited, Location: london}, "2026-10-25T23:59:59Z", "2026-10-24T23:00:00Z",
			"daily 2026-10-25", ""},
		{"hour boundary", Policy{Hourly: Unlimited}, "2026-11-10T15:00:00Z", "2026-11-10T14:59:59Z",
			"hourly 2026-11-10 15:00 UTC", "hourly 2026-11-10 14:00 UTC"},
		{"ISO week 53 to week 1", Policy{Weekly: Unlimited}, "2027-01-04T00:00:00Z", "2027-01-03T23:59:59Z",
			"weekly 2027-W01", "weekly 2026-W53"},
		{"ISO week 53 spans new year", Policy{Weekly: Unlimited}, "2027-01-03T23:59:59Z", "2026-12-28T00:00:00Z",
			"weekly 2026-W53", ""},
		{"ISO week 53 of 2020", Policy{Weekly: Unlimited}, "2021-01-03T12:00:00Z", "2020-12-31T12:00:00Z",
			"weekly 2020-W53", ""},
		{"week starts on Monday", Policy{Weekly: Unlimited}, "2026-11-09T00:00:00Z", "2026-11-08T23:59:59Z",
			"weekly 2026-W46", "weekly 2026-W45"},
		{"month boundary", Policy{Monthly: Unlimited}, "2026-02-01T00:00:00Z", "2026-01-31T23:59:59Z",
			"monthly 2026-02", "monthly 2026-01"},
		{"year boundary", Policy{Yearly: Unlimited}, "2027-01-01T00:00:00Z", "2026-12-31T23:59:59Z",
			"yearly 2027", "yearly 2026"},
		{"year boundary in Tokyo", Policy{Yearly: Unlimited, Location: tokyo}, "2026-12-31T15:00:00Z", "2026-12-31T14:59:59Z",
			"yearly 2027", "yearly 2026"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snaps := records(t, []snap{
				{name: "new", time: tt.newer},
				{name: "old", time: tt.older},
				{name: "anchor", time: "1990-01-01T00:00:00Z"},
			})
			groups, err := Apply(tt.p, snaps, now)
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			got := kept(t, groups)
			if want := []string{tt.wantNewer}; !reflect.DeepEqual(got["new"], want) {
				t.Errorf("newer: got %q, want %q", got["new"], want)
			}
			var wantOlder []string
			if tt.wantOlder != "" {
				wantOlder = []string{tt.wantOlder}
			}
			if !reflect.DeepEqual(got["old"], wantOlder) {
				t.Errorf("older: got %q, want %q", got["old"], wantOlder)
			}
		})
	}
}

func TestGrouping(t *testing.T) {
	snaps := []snap{
		{name: "w1", time: "2026-11-10T10:00:00Z", host: "web01", paths: []string{"/a", "/b"}, tags: []string{"x", "y"}},
		{name: "w2", time: "2026-11-09T10:00:00Z", host: "web01", paths: []string{"/b", "/a"}, tags: []string{"y", "x"}},
		{name: "w3", time: "2026-11-08T10:00:00Z", host: "web01", paths: []string{"/a", "/a", "/b"}},
		{name: "w4", time: "2026-11-07T10:00:00Z", host: "web01", paths: []string{"/a"}, tags: []string{"x"}},
		{name: "d1", time: "2026-11-10T11:00:00Z", host: "db01", paths: []string{"/a", "/b"}},
		{name: "d2", time: "2026-11-06T11:00:00Z", host: "db01", paths: []string{"/b", "/a"}, tags: []string{"x", "y"}},
	}
	tests := []struct {
		name     string
		groupBy  GroupBy
		wantKeys []string
		wantKept []string // names, sorted
	}{
		{"default is host and paths", 0,
			[]string{"host=db01 paths=/a,/b", "host=web01 paths=/a", "host=web01 paths=/a,/b"},
			[]string{"d1", "w1", "w4"}},
		{"explicit host,paths", GroupByHost | GroupByPaths,
			[]string{"host=db01 paths=/a,/b", "host=web01 paths=/a", "host=web01 paths=/a,/b"},
			[]string{"d1", "w1", "w4"}},
		{"host", GroupByHost, []string{"host=db01", "host=web01"}, []string{"d1", "w1"}},
		{"paths", GroupByPaths, []string{"paths=/a", "paths=/a,/b"}, []string{"d1", "w4"}},
		{"tags", GroupByTags, []string{"tags=", "tags=x", "tags=x,y"}, []string{"d1", "w1", "w4"}},
		{"host,tags", GroupByHost | GroupByTags,
			[]string{"host=db01 tags=", "host=db01 tags=x,y", "host=web01 tags=", "host=web01 tags=x", "host=web01 tags=x,y"},
			[]string{"d1", "d2", "w1", "w3", "w4"}},
		{"none", GroupByNone, []string{""}, []string{"d1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			groups, err := Apply(Policy{Last: 1, GroupBy: tt.groupBy}, records(t, snaps), now)
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			var keys []string
			total := 0
			for _, g := range groups {
				keys = append(keys, g.Key)
				total += len(g.Decisions)
			}
			if !reflect.DeepEqual(keys, tt.wantKeys) {
				t.Errorf("keys:\n got %q\nwant %q", keys, tt.wantKeys)
			}
			if total != len(snaps) {
				t.Errorf("%d decisions for %d snapshots", total, len(snaps))
			}
			var names []string
			for n := range kept(t, groups) {
				names = append(names, n)
			}
			slices.Sort(names)
			if !reflect.DeepEqual(names, tt.wantKept) {
				t.Errorf("kept %q, want %q", names, tt.wantKept)
			}
		})
	}
}

func TestGroupKeyQuoting(t *testing.T) {
	tests := []struct {
		host  string
		paths []string
		want  string
	}{
		{"web01", []string{"/srv"}, "host=web01 paths=/srv"},
		{"", []string{"/srv"}, `host="" paths=/srv`},
		{"my host", []string{"/srv"}, `host="my host" paths=/srv`},
		{"a=b", []string{"/x,y", "/z"}, `host="a=b" paths="/x,y",/z`},
		{"h", []string{}, "host=h paths="},
		{"h", []string{""}, `host=h paths=""`},
		{"h", []string{"/tab\there"}, `host=h paths="/tab\there"`},
		{"h\xff", []string{"/ü"}, `host="h\xff" paths=/ü`},
	}
	for _, tt := range tests {
		s := vault.SnapshotRecord{Host: tt.host, Paths: tt.paths}
		if got := groupKey(DefaultGroupBy, s); got != tt.want {
			t.Errorf("groupKey(%q, %q) = %s, want %s", tt.host, tt.paths, got, tt.want)
		}
	}
	// A host that looks like a whole key must not merge with that group.
	a := vault.SnapshotRecord{Host: "x paths=/a", Paths: []string{"/b"}}
	b := vault.SnapshotRecord{Host: "x", Paths: []string{"/a paths=/b"}}
	if groupKey(DefaultGroupBy, a) == groupKey(DefaultGroupBy, b) {
		t.Errorf("distinct groups share key %s", groupKey(DefaultGroupBy, a))
	}
}

func TestApplyEmpty(t *testing.T) {
	for _, snaps := range [][]vault.SnapshotRecord{nil, {}} {
		groups, err := Apply(Policy{Last: 1}, snaps, now)
		if err != nil || len(groups) != 0 {
			t.Errorf("Apply(%v) = %v, %v; want no groups, no error", snaps, groups, err)
		}
	}
	if _, err := Apply(Policy{}, nil, now); !errors.Is(err, ErrEmptyPolicy) {
		t.Errorf("Apply(empty policy, no snapshots) = %v, want ErrEmptyPolicy", err)
	}
}

func TestApplyDuplicateTimestamps(t *testing.T) {
	same := "2026-11-10T10:00:00Z"
	snaps := records(t, []snap{
		{name: "c", time: same}, {name: "a", time: same}, {name: "b", time: same},
		{name: "old", time: "2026-11-01T10:00:00Z"},
	})
	var first []Group
	for i := range 5 {
		rand.New(rand.NewPCG(uint64(i), 0)).Shuffle(len(snaps), func(i, j int) { snaps[i], snaps[j] = snaps[j], snaps[i] })
		groups, err := Apply(Policy{Last: 2, Daily: 1}, snaps, now)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string][]string{"a": {"last #1", "daily 2026-11-10"}, "b": {"last #2"}}
		if got := kept(t, groups); !reflect.DeepEqual(got, want) {
			t.Fatalf("kept %q, want %q", got, want)
		}
		var order []string
		for _, d := range groups[0].Decisions {
			order = append(order, nameOf(d.Snapshot.ID))
		}
		if want := []string{"a", "b", "c", "old"}; !reflect.DeepEqual(order, want) {
			t.Errorf("order %q, want %q", order, want)
		}
		if first == nil {
			first = groups
		} else if !reflect.DeepEqual(groups, first) {
			t.Errorf("result depends on input order")
		}
	}
}

func TestApplyErrors(t *testing.T) {
	two := records(t, []snap{{name: "a", time: "2026-11-10T10:00:00Z"}, {name: "a", time: "2026-11-09T10:00:00Z"}})
	if _, err := Apply(Policy{Last: 1}, two, now); err == nil || !strings.Contains(err.Error(), "listed twice") {
		t.Errorf("duplicate IDs: got %v, want a 'listed twice' error", err)
	}
	one := records(t, history[:1])
	if _, err := Apply(Policy{Last: 1}, one, time.Time{}); err == nil || !strings.Contains(err.Error(), "zero time") {
		t.Errorf("zero now: got %v, want a 'zero time' error", err)
	}
	if _, err := Apply(Policy{Last: -2}, one, now); err == nil || !strings.Contains(err.Error(), "--keep-last") {
		t.Errorf("invalid policy: got %v, want a --keep-last error", err)
	}
}

func TestApplyRefusesToRemoveAll(t *testing.T) {
	snaps := records(t, []snap{
		{name: "a", time: "2026-11-10T10:00:00Z", host: "web01", tags: []string{"prod"}},
		{name: "b", time: "2026-11-09T10:00:00Z", host: "web01"},
		{name: "c", time: "2026-11-10T10:00:00Z", host: "db01"},
		{name: "d", time: "2026-11-09T10:00:00Z", host: "db01", tags: []string{"dev"}},
	})
	_, err := Apply(Policy{Tags: []string{"prod"}}, snaps, now)
	if !errors.Is(err, ErrRemoveAll) {
		t.Fatalf("got %v, want ErrRemoveAll", err)
	}
	if !strings.Contains(err.Error(), "host=db01 paths=/srv") || strings.Contains(err.Error(), "web01") {
		t.Errorf("error should name db01's group only: %v", err)
	}
	groups, err := Apply(Policy{Tags: []string{"prod", "dev"}}, snaps, now)
	if err != nil {
		t.Fatalf("every group has a tagged snapshot: %v", err)
	}
	if got, want := kept(t, groups), map[string][]string{"a": {"tag prod"}, "d": {"tag dev"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("kept %q, want %q", got, want)
	}
}

func TestApplyDoesNotModifyInput(t *testing.T) {
	snaps := records(t, []snap{
		{name: "b", time: "2026-11-09T10:00:00Z", paths: []string{"/z", "/a", "/a"}, tags: []string{"y", "x"}},
		{name: "a", time: "2026-11-10T10:00:00Z", paths: []string{"/a", "/z"}, tags: []string{"x", "y"}},
	})
	orig := make([]vault.SnapshotRecord, len(snaps))
	for i, s := range snaps {
		orig[i] = s
		orig[i].Paths = slices.Clone(s.Paths)
		orig[i].Tags = slices.Clone(s.Tags)
	}
	if _, err := Apply(Policy{Last: 1, GroupBy: GroupByPaths | GroupByTags}, snaps, now); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(snaps, orig) {
		t.Errorf("Apply modified its input:\n got %+v\nwant %+v", snaps, orig)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		p       Policy
		wantErr []string // substrings; nil means valid
	}{
		{"last", Policy{Last: 1}, nil},
		{"unlimited", Policy{Yearly: Unlimited}, nil},
		{"within", Policy{Within: 30 * 24 * time.Hour}, nil},
		{"tag", Policy{Tags: []string{"prod"}}, nil},
		{"everything", Policy{Last: 1, Hourly: 2, Daily: 3, Weekly: 4, Monthly: 5, Yearly: -1, Within: time.Hour,
			Tags: []string{"a", "b"}, GroupBy: GroupByTags, Location: time.UTC}, nil},
		{"zero policy", Policy{}, []string{"no keep rule given"}},
		{"zero counts with grouping", Policy{GroupBy: GroupByHost, Tags: []string{}}, []string{"no keep rule given"}},
		{"negative last", Policy{Last: -2}, []string{"--keep-last -2"}},
		{"negative hourly", Policy{Hourly: -5}, []string{"--keep-hourly -5"}},
		{"negative daily", Policy{Daily: -2, Last: 1}, []string{"--keep-daily -2"}},
		{"negative weekly", Policy{Weekly: -3}, []string{"--keep-weekly -3"}},
		{"negative monthly", Policy{Monthly: -100}, []string{"--keep-monthly -100"}},
		{"negative yearly", Policy{Yearly: -2}, []string{"--keep-yearly -2"}},
		{"negative within", Policy{Within: -time.Hour}, []string{"--keep-within -1h0m0s: must not be negative"}},
		{"within not whole hours", Policy{Within: 90 * time.Minute}, []string{"--keep-within 1h30m0s: must be a whole number of hours"}},
		{"empty tag", Policy{Tags: []string{""}}, []string{"--keep-tag: empty tag"}},
		{"duplicate tag", Policy{Tags: []string{"a", "b", "a"}}, []string{`--keep-tag "a": given twice`}},
		{"bad group-by", Policy{Last: 1, GroupBy: GroupByNone | GroupByHost}, []string{"--group-by: none cannot be combined"}},
		{"unknown group-by bits", Policy{Last: 1, GroupBy: 0x80}, []string{"--group-by: invalid value 0x80"}},
		{"several problems at once", Policy{Last: -2, Daily: -3, Tags: []string{""}},
			[]string{"--keep-last -2", "--keep-daily -3", "--keep-tag: empty tag"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate: no error, want %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if isEmpty := slices.Contains(tt.wantErr, "no keep rule given"); errors.Is(err, ErrEmptyPolicy) != isEmpty {
				t.Errorf("errors.Is(err, ErrEmptyPolicy) = %v, want %v", !isEmpty, isEmpty)
			}
		})
	}
}

func TestParseDuration(t *testing.T) {
	const day = 24 * time.Hour
	valid := []struct {
		in   string
		want time.Duration
	}{
		{"30d", 30 * day},
		{"12h", 12 * time.Hour},
		{"720h", 720 * time.Hour},
		{"2w", 14 * day},
		{"1y", 365 * day},
		{"6m", 180 * day},
		{"1y2m3d", (365 + 60 + 3) * day},
		{"2y5m7d3h", (730+150+7)*day + 3*time.Hour},
		{"1w2d", 9 * day},
		{"1d12h", 36 * time.Hour},
		{"0d", 0},
		{"007d", 7 * day},
		{"292y", 292 * 365 * day},
	}
	for _, tt := range valid {
		got, err := ParseDuration(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	invalid := []struct {
		in, want string
	}{
		{"", "empty duration"},
		{"-1d", "must not be negative"},
		{"30", "has no unit"},
		{"d", "expected a number"},
		{"1h30m", `"m" means months`},
		{"90s", "whole hours"},
		{"1.5h", "whole hours"},
		{"500ms", "whole hours"},
		{"10min", "whole hours"},
		{"1µs", "whole hours"},
		{"1hr", "unknown unit \"hr\""},
		{"1x", "unknown unit"},
		{"1d1d", "out of order or repeated"},
		{"1d1w", "out of order or repeated"},
		{"1d 2h", "unknown unit"},
		{" 1d", "expected a number"},
		{"+1d", "expected a number"},
		{"293y", "too long"},
		{"106751d24h", "too long"},
		{"106751d23h1h", "out of order or repeated"},
		{"99999999999999999999d", "number too large"},
		{"1y1m1w1d1h1h", "out of order or repeated"},
	}
	for _, tt := range invalid {
		got, err := ParseDuration(tt.in)
		if err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", tt.in, got)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "--keep-within") {
			t.Errorf("ParseDuration(%q) error %q does not contain %q and --keep-within", tt.in, err, tt.want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "0h"},
		{time.Hour, "1h"},
		{36 * time.Hour, "1d12h"},
		{720 * time.Hour, "30d"},
		{365 * 24 * time.Hour, "365d"},
		{90 * time.Minute, "1h30m0s"},
		{-time.Hour, "-1h0m0s"},
	}
	for _, tt := range tests {
		if got := FormatDuration(tt.in); got != tt.want {
			t.Errorf("FormatDuration(%v) = %q, want %q", tt.in, got, tt.want)
		}
		if tt.in >= 0 && tt.in%time.Hour == 0 {
			if back, err := ParseDuration(FormatDuration(tt.in)); err != nil || back != tt.in {
				t.Errorf("ParseDuration(FormatDuration(%v)) = %v, %v", tt.in, back, err)
			}
		}
	}
}

func TestParseGroupBy(t *testing.T) {
	valid := []struct {
		in     string
		want   GroupBy
		String string
	}{
		{"", 0, "host,paths"},
		{"  ", 0, "host,paths"},
		{"host,paths", GroupByHost | GroupByPaths, "host,paths"},
		{"paths,host", GroupByHost | GroupByPaths, "host,paths"},
		{"host", GroupByHost, "host"},
		{"paths", GroupByPaths, "paths"},
		{"tags", GroupByTags, "tags"},
		{"host, tags", GroupByHost | GroupByTags, "host,tags"},
		{"host,paths,tags", GroupByHost | GroupByPaths | GroupByTags, "host,paths,tags"},
		{"none", GroupByNone, "none"},
	}
	for _, tt := range valid {
		got, err := ParseGroupBy(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseGroupBy(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			continue
		}
		if s := got.String(); s != tt.String {
			t.Errorf("ParseGroupBy(%q).String() = %q, want %q", tt.in, s, tt.String)
		}
		if back, err := ParseGroupBy(got.String()); err != nil || back.effective() != got.effective() {
			t.Errorf("ParseGroupBy(%q) does not round-trip: %v, %v", got.String(), back, err)
		}
	}
	invalid := []struct{ in, want string }{
		{"hosts", `unknown field "hosts"`},
		{"Host", `unknown field "Host"`},
		{"host,", "empty field"},
		{",host", "empty field"},
		{"host,host", "host given twice"},
		{"none,host", "none cannot be combined"},
		{"host;paths", "unknown field"},
	}
	for _, tt := range invalid {
		got, err := ParseGroupBy(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "--group-by") {
			t.Errorf("ParseGroupBy(%q) = %v, %v; want an error containing %q", tt.in, got, err, tt.want)
		}
	}
}

func TestPolicyString(t *testing.T) {
	london := loadLocation(t, "Europe/London")
	tests := []struct {
		p    Policy
		want string
	}{
		{Policy{Last: 3}, "--keep-last 3 --group-by host,paths"},
		{Policy{Daily: 7, Yearly: Unlimited, Within: 720 * time.Hour, Tags: []string{"prod", "two words"}, GroupBy: GroupByNone, Location: london},
			`--keep-daily 7 --keep-yearly -1 --keep-within 30d --keep-tag prod --keep-tag "two words" --group-by none (calendar Europe/London)`},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("String() =\n %s\nwant\n %s", got, tt.want)
		}
	}
}

// TestProperties applies random policies to random snapshot sets and
// checks invariants that must hold for any input.
func TestProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(20261111, 1))
	locations := []*time.Location{nil, time.UTC, loadLocation(t, "Europe/London"), loadLocation(t, "America/New_York")}
	groupBys := []GroupBy{0, GroupByHost, GroupByPaths, GroupByTags, GroupByHost | GroupByTags, GroupByNone}
	counts := []int{0, 0, 0, 0, 1, 2, 3, 7, Unlimited}
	withins := []time.Duration{0, 0, 0, time.Hour, 36 * time.Hour, 30 * 24 * time.Hour}
	pick := func(s []string) []string {
		var out []string
		for _, v := range s {
			if rng.IntN(3) == 0 {
				out = append(out, v)
			}
		}
		return out
	}
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	const span = int64(3 * 365 * 24 * time.Hour)

	for iter := range 2000 {
		n := rng.IntN(40)
		snaps := make([]vault.SnapshotRecord, n)
		var times []time.Time
		for i := range snaps {
			var tm time.Time
			if len(times) > 0 && rng.IntN(5) == 0 {
				tm = times[rng.IntN(len(times))] // duplicate timestamps
			} else if rng.IntN(2) == 0 {
				tm = base.Add(time.Duration(rng.Int64N(span)))
			} else { // clustered: many snapshots within a few days
				tm = base.Add(time.Duration(span/2 + rng.Int64N(int64(5*24*time.Hour))))
			}
			times = append(times, tm)
			var id vault.ID
			id[0], id[1], id[2] = byte(i), byte(iter), byte(iter>>8)
			snaps[i] = vault.SnapshotRecord{
				ID: id, Time: tm,
				Host:  []string{"a", "b", "c"}[rng.IntN(3)],
				Paths: pick([]string{"/x", "/y"}),
				Tags:  pick([]string{"t1", "t2", "t3"}),
			}
		}
		p := Policy{
			Last: counts[rng.IntN(len(counts))], Hourly: counts[rng.IntN(len(counts))],
			Daily: counts[rng.IntN(len(counts))], Weekly: counts[rng.IntN(len(counts))],
			Monthly: counts[rng.IntN(len(counts))], Yearly: counts[rng.IntN(len(counts))],
			Within:   withins[rng.IntN(len(withins))],
			Tags:     pick([]string{"t1", "t2", "t3"}),
			GroupBy:  groupBys[rng.IntN(len(groupBys))],
			Location: locations[rng.IntN(len(locations))],
		}
		clock := base.Add(time.Duration(rng.Int64N(span + span/3))) // sometimes before some snapshots
		checkInvariants(t, p, snaps, clock, rng)

		// keep-last N alone keeps min(N, len) per group.
		last := Policy{Last: counts[4+rng.IntN(len(counts)-4)], GroupBy: p.GroupBy}
		groups, err := Apply(last, snaps, clock)
		if err != nil {
			t.Fatalf("Apply(%v): %v", last, err)
		}
		for _, g := range groups {
			want := len(g.Decisions)
			if last.Last != Unlimited {
				want = min(last.Last, want)
			}
			got := 0
			for i, d := range g.Decisions {
				if d.Keep {
					got++
					if i >= want {
						t.Fatalf("%v kept decision %d of group %s", last, i, g.Key)
					}
				}
			}
			if got != want {
				t.Fatalf("%v kept %d of group %s, want %d", last, got, g.Key, want)
			}
		}
	}
}

func checkInvariants(t *testing.T, p Policy, snaps []vault.SnapshotRecord, clock time.Time, rng *rand.Rand) {
	t.Helper()
	tagsOnly := p.Last == 0 && p.Hourly == 0 && p.Daily == 0 && p.Weekly == 0 && p.Monthly == 0 && p.Yearly == 0 && p.Within == 0
	groups, err := Apply(p, snaps, clock)
	switch {
	case tagsOnly && len(p.Tags) == 0:
		if !errors.Is(err, ErrEmptyPolicy) {
			t.Fatalf("Apply(%v) = %v, want ErrEmptyPolicy", p, err)
		}
		return
	case tagsOnly && errors.Is(err, ErrRemoveAll):
		return
	case err != nil:
		t.Fatalf("Apply(%v): %v", p, err)
	}

	seen := map[vault.ID]bool{}
	var keptSnaps []vault.SnapshotRecord
	for gi, g := range groups {
		if gi > 0 && groups[gi-1].Key >= g.Key {
			t.Fatalf("groups not sorted: %q then %q", groups[gi-1].Key, g.Key)
		}
		if len(g.Decisions) == 0 {
			t.Fatalf("empty group %q", g.Key)
		}
		anyKept := false
		for i, d := range g.Decisions {
			if seen[d.Snapshot.ID] {
				t.Fatalf("snapshot %s decided twice", d.Snapshot.ID)
			}
			seen[d.Snapshot.ID] = true
			if i > 0 && newestFirst(g.Decisions[i-1].Snapshot, d.Snapshot) >= 0 {
				t.Fatalf("group %q not sorted newest first at %d", g.Key, i)
			}
			if d.Keep != (len(d.Reasons) > 0) {
				t.Fatalf("Keep=%v with reasons %q", d.Keep, d.Reasons)
			}
			if d.Keep {
				anyKept = true
				keptSnaps = append(keptSnaps, d.Snapshot)
			}
		}
		if !anyKept {
			t.Fatalf("group %q: nothing kept and no error", g.Key)
		}
		if !tagsOnly && !g.Decisions[0].Keep {
			t.Fatalf("%v removed the newest snapshot of group %q", p, g.Key)
		}
	}
	if len(seen) != len(snaps) {
		t.Fatalf("%d decisions for %d snapshots", len(seen), len(snaps))
	}

	// Input order does not matter.
	shuffled := slices.Clone(snaps)
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	again, err := Apply(p, shuffled, clock)
	if err != nil || !reflect.DeepEqual(again, groups) {
		t.Fatalf("Apply(%v) depends on input order (err %v)", p, err)
	}

	// Idempotence: the policy keeps everything it kept.
	second, err := Apply(p, keptSnaps, clock)
	if err != nil {
		t.Fatalf("Apply(%v) to the kept set: %v", p, err)
	}
	for _, g := range second {
		for _, d := range g.Decisions {
			if !d.Keep {
				t.Fatalf("Apply(%v) to the kept set removes %s (%s)", p, d.Snapshot.ID.Short(), d.Snapshot.Time)
			}
		}
	}
}

// FuzzApply builds a policy and snapshots from arbitrary bytes; Apply must
// never panic, and when it succeeds its result must be consistent.
func FuzzApply(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10})
	f.Add([]byte{255, 255, 255, 255, 255, 255, 1, 0, 7, 3, 2, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 2, 1, 0})
	f.Add([]byte{0, 3, 0, 0, 0, 0, 0, 24, 0, 2, 0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 1})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 2, 1})
	locations := []*time.Location{nil, loadLocation(f, "Europe/London"), loadLocation(f, "Australia/Lord_Howe"), loadLocation(f, "Pacific/Kiritimati")}
	tagNames := []string{"t1", "t2", ""}
	f.Fuzz(func(t *testing.T, data []byte) {
		next := func() byte {
			if len(data) == 0 {
				return 0
			}
			b := data[0]
			data = data[1:]
			return b
		}
		count := func() int { return int(next()%13) - 3 } // -3..9: mostly valid, some invalid
		p := Policy{Last: count(), Hourly: count(), Daily: count(), Weekly: count(), Monthly: count(), Yearly: count()}
		p.Within = time.Duration(int8(next())) * time.Hour * 24
		if next() == 0xff {
			p.Within += time.Minute // not whole hours: invalid
		}
		tagBits := next()
		if tagBits != 0xff {
			tagBits &= 0x3 // the empty tag (bit 2) is invalid: rarely
		}
		for i, tag := range tagNames {
			if tagBits&(1<<i) != 0 {
				p.Tags = append(p.Tags, tag)
			}
		}
		if b := next(); b < 0xf0 {
			p.GroupBy = []GroupBy{0, GroupByHost, GroupByPaths, GroupByTags, GroupByHost | GroupByTags, GroupByNone}[b%6]
		} else {
			p.GroupBy = GroupBy(b & 0x1f) // mostly invalid
		}
		p.Location = locations[int(next())%len(locations)]
		clock := time.Unix(int64(int32(uint32(next())<<24|uint32(next())<<16)), 0)

		var snaps []vault.SnapshotRecord
		for len(data) > 0 {
			var sec int64
			if next()&1 == 0 {
				sec = int64(int16(uint16(next())<<8|uint16(next()))) * 3600
			} else {
				for range 8 {
					sec = sec<<8 | int64(next())
				}
			}
			s := vault.SnapshotRecord{Time: time.Unix(sec, 0), Host: string([]byte{next() % 3})}
			s.ID[0], s.ID[1] = next(), next()
			bits := next()
			if bits&1 != 0 {
				s.Paths = append(s.Paths, "/a")
			}
			if bits&2 != 0 {
				s.Paths = append(s.Paths, "/b,c")
			}
			for i, tag := range tagNames {
				if bits&(4<<i) != 0 {
					s.Tags = append(s.Tags, tag)
				}
			}
			snaps = append(snaps, s)
		}

		groups, err := Apply(p, snaps, clock)
		if err != nil {
			return
		}
		if p.Validate() != nil {
			t.Fatalf("Apply accepted an invalid policy %v", p)
		}
		total := 0
		for _, g := range groups {
			total += len(g.Decisions)
			for _, d := range g.Decisions {
				if d.Keep != (len(d.Reasons) > 0) {
					t.Fatalf("Keep=%v with reasons %q", d.Keep, d.Reasons)
				}
			}
		}
		if total != len(snaps) {
			t.Fatalf("%d decisions for %d snapshots", total, len(snaps))
		}
	})
}

// FuzzParseDuration: never panics, never returns a negative duration, and
// what it accepts formats back to the same duration.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"30d", "1y2m3d", "2w", "720h", "1h30m", "-1d", "", "292y", "99999999999999999999d", "1d1d", "0h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			return
		}
		if d < 0 || d%time.Hour != 0 {
			t.Fatalf("ParseDuration(%q) = %v", s, d)
		}
		back, err := ParseDuration(FormatDuration(d))
		if err != nil || back != d {
			t.Fatalf("ParseDuration(FormatDuration(%v)) = %v, %v", d, back, err)
		}
		if err := (Policy{Within: d}).Validate(); d > 0 && err != nil {
			t.Fatalf("Validate of parsed duration %v: %v", d, err)
		}
	})
}

// FuzzParseGroupBy: never panics; what it accepts is valid and round-trips.
func FuzzParseGroupBy(f *testing.F) {
	for _, s := range []string{"", "host,paths", "tags", "none", "host,,paths", "none,host", "paths ,host"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		g, err := ParseGroupBy(s)
		if err != nil {
			return
		}
		if err := g.validate(); err != nil {
			t.Fatalf("ParseGroupBy(%q) = %v, invalid: %v", s, g, err)
		}
		back, err := ParseGroupBy(g.String())
		if err != nil || back.effective() != g.effective() {
			t.Fatalf("ParseGroupBy(%q) = %v; String %q parses to %v, %v", s, g, g.String(), back, err)
		}
	})
}
