package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/vault"
)

// snapshotFilter selects snapshots as restic does: a snapshot matches
// when it is of one of Hosts, holds every one of Paths among its paths,
// and carries every tag of one of Tags. An empty field matches every
// snapshot; an empty list in Tags matches the snapshots without tags.
// Names are compared exactly, byte for byte, as recorded: "web01" never
// selects "WEB01".
type snapshotFilter struct {
	Hosts []string
	Paths []string
	Tags  [][]string
}

// Empty reports whether f selects every snapshot.
func (f snapshotFilter) Empty() bool {
	return len(f.Hosts) == 0 && len(f.Paths) == 0 && len(f.Tags) == 0
}

// Match reports whether f selects s.
func (f snapshotFilter) Match(s vault.SnapshotRecord) bool {
	if len(f.Hosts) > 0 && !slices.Contains(f.Hosts, s.Host) {
		return false
	}
	for _, p := range f.Paths {
		if !slices.Contains(s.Paths, p) {
			return false
		}
	}
	if len(f.Tags) == 0 {
		return true
	}
	for _, list := range f.Tags {
		if len(list) == 0 && len(s.Tags) == 0 {
			return true
		}
		if len(list) > 0 && !slices.ContainsFunc(list, func(t string) bool { return !slices.Contains(s.Tags, t) }) {
			return true
		}
	}
	return false
}

// Select returns the snapshots of snaps that f selects, in their order.
func (f snapshotFilter) Select(snaps []vault.SnapshotRecord) []vault.SnapshotRecord {
	var out []vault.SnapshotRecord
	for _, s := range snaps {
		if f.Match(s) {
			out = append(out, s)
		}
	}
	return out
}

// String describes f for messages, as the flags that give it.
func (f snapshotFilter) String() string {
	var parts []string
	for _, h := range f.Hosts {
		parts = append(parts, "--host "+quoteArg(h))
	}
	for _, p := range f.Paths {
		parts = append(parts, "--path "+quoteArg(p))
	}
	for _, l := range f.Tags {
		parts = append(parts, "--tag "+quoteArg(strings.Join(l, ",")))
	}
	return strings.Join(parts, " ")
}

// quoteArg shows s as a shell argument: bare when that is unambiguous.
func quoteArg(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r == '/' || r == '.' || r == '-' || r == '_' || r == ',' || r == ':' || r == '@' || r == '+' ||
			('0' <= r && r <= '9') || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z'))
	}) {
		return s
	}
	return fmt.Sprintf("%q", s)
}

// selectFlags are the --host, --path and --tag flags of the commands that
// select snapshots (snapshots, ls, restore, diff, forget; find to come),
// and --any-host on those that resolve "latest".
type selectFlags struct {
	hosts, paths, tags []string
	anyHost            bool
	latest             bool
}

// register adds the flags to cmd; latest: the command takes a SNAPSHOT
// that may be "latest", which means this host's unless told otherwise.
func (f *selectFlags) register(cmd *cobra.Command, latest bool) {
	f.latest = latest
	fl := cmd.Flags()
	if latest {
		fl.StringArrayVar(&f.hosts, "host", nil, `only snapshots of this host (repeatable: any of them); "latest" is this host's newest unless --host or --any-host is given`)
		fl.BoolVar(&f.anyHost, "any-host", false, `"latest" is the newest snapshot of any host, not only of this one`)
		fl.StringArrayVar(&f.paths, "path", nil, `only snapshots that include this path among their backed-up paths (repeatable: all of them)`)
		fl.StringArrayVar(&f.tags, "tag", nil, `only snapshots with all of these tags: a or a,b; '' for snapshots without tags (repeatable: any of the lists)`)
		return
	}
	fl.StringArrayVar(&f.hosts, "host", nil, "only snapshots of this host (repeatable: any of them)")
	fl.StringArrayVar(&f.paths, "path", nil, "only snapshots that include this path among their backed-up paths (repeatable: all of them)")
	fl.StringArrayVar(&f.tags, "tag", nil, "only snapshots with all of these tags: a or a,b; '' for snapshots without tags (repeatable: any of the lists)")
}

// selection is what a command selects snapshots by: the filter the user
// gave, and whether "latest" may be of any host.
type selection struct {
	snapshotFilter
	anyHost bool
}

// selection checks the flags and returns what they select.
func (f *selectFlags) selection() (selection, error) {
	var sel selection
	sel.anyHost = f.anyHost
	if f.anyHost && len(f.hosts) > 0 {
		return sel, errors.New("give --host or --any-host, not both")
	}
	for _, h := range f.hosts {
		if h == "" {
			// An unset variable in a script (--host "$HOST") must not widen
			// a restore to every host.
			what := "--any-host for every host"
			if !f.latest {
				what = "leave --host out for every host"
			}
			return sel, fmt.Errorf("--host \"\": give a host name (%s)", what)
		}
		if !slices.Contains(sel.Hosts, h) {
			sel.Hosts = append(sel.Hosts, h)
		}
	}
	for _, p := range f.paths {
		if p == "" {
			return sel, errors.New("--path \"\": give a path that was backed up, such as /home/ann")
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return sel, fmt.Errorf("--path %s: %w", p, err)
		}
		if !slices.Contains(sel.Paths, abs) {
			sel.Paths = append(sel.Paths, abs)
		}
	}
	for _, t := range f.tags {
		list := []string{}
		for _, tag := range strings.Split(t, ",") {
			if tag = strings.TrimSpace(tag); tag != "" && !slices.Contains(list, tag) {
				list = append(list, tag)
			}
		}
		sel.Tags = append(sel.Tags, list)
	}
	return sel, nil
}

// thisHost is the host this machine's snapshots are recorded under:
// $COFFER_HOST, else the machine's host name.
func (a *app) thisHost() (string, error) {
	if h := a.getenv("COFFER_HOST"); h != "" {
		return h, nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("cannot read this machine's host name (%w): set COFFER_HOST or give --host", err)
	}
	return h, nil
}

// findSnapshot resolves ref (a full ID, a unique prefix of one, or
// "latest") to a snapshot that sel selects, authenticated by the vault's
// FindSnapshot either way.
//
// "latest" is the newest selected snapshot of this host: with an agent's
// token, of the agent's own (the server records its snapshots under that
// name), else of $COFFER_HOST or this machine's host name. --host names
// other hosts, --any-host all of them. Another machine's backup, however
// recent, is not what a restore here should bring back.
//
// An ID names one snapshot whatever host made it; filters the user gave
// must select it, or the command refuses it rather than act on a snapshot
// the filters excluded.
func (a *app) findSnapshot(ctx context.Context, v conn, ref string, sel selection) (vault.SnapshotRecord, error) {
	if ref != "latest" {
		s, err := v.FindSnapshot(ctx, ref)
		if err != nil {
			return s, err
		}
		if !sel.Match(s) {
			return vault.SnapshotRecord{}, notSelected(s, sel.snapshotFilter)
		}
		return s, nil
	}
	f := sel.snapshotFilter
	implicit := ""
	if len(f.Hosts) == 0 && !sel.anyHost {
		if rv, ok := v.(*remoteVault); ok {
			// Only a token with backup rights learns its bound host.
			if err := rv.LoadDedup(ctx); err != nil && !errors.Is(err, api.ErrForbidden) {
				return vault.SnapshotRecord{}, err
			}
			implicit = rv.BoundHost()
		}
		if implicit == "" {
			h, err := a.thisHost()
			if err != nil {
				return vault.SnapshotRecord{}, fmt.Errorf(`"latest" is this host's newest snapshot, and %w, or --any-host`, err)
			}
			implicit = h
		}
		f.Hosts = []string{implicit}
	}
	snaps, err := v.Snapshots(ctx)
	if err != nil {
		return vault.SnapshotRecord{}, err
	}
	mine := f.Select(snaps)
	if len(mine) == 0 {
		return vault.SnapshotRecord{}, noLatest(snaps, f, implicit != "")
	}
	s, err := engine.FindSnapshot(mine, "latest")
	if err != nil {
		return s, err
	}
	if len(f.Paths) == 0 {
		if sets := pathSets(mine); len(sets) > 1 {
			fmt.Fprintf(a.stderr, "note: latest is of %s, one of %d sets of paths backed up on %s; --path chooses another (coffer snapshots lists them)\n",
				safeList(s.Paths, ", "), len(sets), hostsText(f.Hosts))
		}
	}
	return v.FindSnapshot(ctx, s.ID.String())
}

// notSelected is the refusal of a snapshot named by ID that the filters
// given exclude.
func notSelected(s vault.SnapshotRecord, f snapshotFilter) error {
	tags := "no tags"
	if len(s.Tags) > 0 {
		tags = "tags " + safeList(s.Tags, ",")
	}
	return fmt.Errorf("snapshot %s (host %q, paths %s, %s) is not selected by %s: nothing was done; check the ID, or leave those flags out",
		s.ID.Short(), safeText(s.Host), safeList(s.Paths, ", "), tags, safeText(f.String()))
}

// noLatest explains why "latest" found nothing, and how to choose.
func noLatest(snaps []vault.SnapshotRecord, f snapshotFilter, thisHost bool) error {
	if len(snaps) == 0 {
		return fmt.Errorf("no snapshots yet: %w", vault.ErrNotFound)
	}
	hostOnly := snapshotFilter{Hosts: f.Hosts}
	ofHosts := hostOnly.Select(snaps)
	if len(ofHosts) == 0 {
		var others []string
		for _, s := range snaps {
			if !slices.Contains(others, s.Host) {
				others = append(others, s.Host)
			}
		}
		who := "host " + hostsText(f.Hosts)
		if thisHost {
			who = "this host (" + hostsText(f.Hosts) + ")"
		}
		return fmt.Errorf("no snapshot of %s yet; the vault has snapshots of %s: choose one with --host NAME, or --any-host for the newest of any host: %w",
			who, plural(len(others), "other host", "other hosts")+" ("+listSome(others, 8)+")", vault.ErrNotFound)
	}
	var sets []string
	for _, p := range pathSets(ofHosts) {
		sets = append(sets, strings.Join(p, ", "))
	}
	return fmt.Errorf("no snapshot of %s matches %s; its snapshots are of %s (coffer snapshots %s lists them): %w",
		hostsText(f.Hosts), safeText(snapshotFilter{Paths: f.Paths, Tags: f.Tags}.String()), listSome(sets, 8), safeText(hostOnly.String()), vault.ErrNotFound)
}

// pathSets lists the distinct sets of paths of snaps, in order.
func pathSets(snaps []vault.SnapshotRecord) [][]string {
	var sets [][]string
	for _, s := range snaps {
		if !slices.ContainsFunc(sets, func(p []string) bool { return slices.Equal(p, s.Paths) }) {
			sets = append(sets, s.Paths)
		}
	}
	return sets
}

// hostsText names hosts for messages: "web01" or "web01" or "web02".
func hostsText(hosts []string) string {
	q := make([]string, len(hosts))
	for i, h := range hosts {
		q[i] = fmt.Sprintf("%q", safeText(h))
	}
	return strings.Join(q, " or ")
}

// listSome joins at most n of vs (made safe), saying how many more.
func listSome(vs []string, n int) string {
	shown := vs
	if len(vs) > n {
		shown = vs[:n]
	}
	out := make([]string, len(shown))
	for i, v := range shown {
		out[i] = safeText(v)
	}
	s := strings.Join(out, "; ")
	if len(vs) > n {
		s += fmt.Sprintf("; and %d more", len(vs)-n)
	}
	return s
}

// selectSnapshots is the snapshots a command that takes several works on:
// those refs names (each resolved as findSnapshot does, each once), or
// with no refs every snapshot sel selects.
func (a *app) selectSnapshots(ctx context.Context, v conn, refs []string, sel selection) ([]vault.SnapshotRecord, error) {
	if len(refs) == 0 {
		all, err := v.Snapshots(ctx)
		if err != nil {
			return nil, err
		}
		return sel.Select(all), nil
	}
	var snaps []vault.SnapshotRecord
	seen := map[vault.ID]bool{}
	for _, ref := range refs {
		s, err := a.findSnapshot(ctx, v, ref, sel)
		if err != nil {
			return nil, err
		}
		if !seen[s.ID] {
			seen[s.ID] = true
			snaps = append(snaps, s)
		}
	}
	return snaps, nil
}
