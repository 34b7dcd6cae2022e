package agent_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/agent"
)

// TestChosenParentRules: a parent the caller names passes the rules the
// automatic choice (and a server) applies, since its unchanged files are
// reused without being read: same host, same dedup domain, not older than
// ParentSince. Force reads everything and takes no parent.
func TestChosenParentRules(t *testing.T) {
	v := newVault(t, small)
	src := t.TempDir()
	write(t, filepath.Join(src, "a"), []byte("alpha"))
	write(t, filepath.Join(src, "b"), []byte("bravo"))
	first := backup(t, v, src).Snapshot
	ctx := context.Background()
	run := func(opt agent.BackupOptions) (*agent.BackupResult, error) {
		opt.Paths, opt.Host = []string{src}, "testhost"
		return agent.Backup(ctx, v.repo, opt)
	}
	before, err := v.repo.Snapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}

	otherHost, otherDomain := first, first
	otherHost.Host = "web02"
	otherDomain.Domain = "agt_0123456789abcdef"
	for _, c := range []struct {
		name string
		opt  agent.BackupOptions
		want string
	}{
		{"another host", agent.BackupOptions{Parent: &otherHost}, `is of host "web02"`},
		{"another domain", agent.BackupOptions{Parent: &otherDomain}, "another source's dedup domain"},
		{"before the agent", agent.BackupOptions{Parent: &first, ParentSince: first.Time.Add(time.Second)}, "predates agent"},
		{"with force", agent.BackupOptions{Parent: &first, Force: true}, "exclude each other"},
	} {
		if _, err := run(c.opt); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
	if after, _ := v.repo.Snapshots(ctx); len(after) != len(before) {
		t.Errorf("refused backups recorded %d snapshots", len(after)-len(before))
	}

	res, err := run(agent.BackupOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Snapshot.Parent.IsZero() || res.Reused != 0 {
		t.Errorf("force: parent %s, %d files reused; want none, 0", res.Snapshot.Parent.Short(), res.Reused)
	}
	res, err = run(agent.BackupOptions{Parent: &first})
	if err != nil {
		t.Fatal(err)
	}
	if res.Snapshot.Parent != first.ID || res.Reused != 2 {
		t.Errorf("parent %s chosen: parent %s, %d files reused; want it, 2", first.ID.Short(), res.Snapshot.Parent.Short(), res.Reused)
	}
}
