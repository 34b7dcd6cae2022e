package server_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/client"
	"github.com/coffer-backup/coffer/internal/server/servertest"
)

// Sizes of each agent's generated directory: content shared by every
// agent (deduplicated across agents in one vault) and its own.
const (
	sharedBig   = 1 << 20 // one file, the same in every directory
	sharedSmall = 6       // small files, the same in every directory
	ownBig      = 1 << 20
	ownMid      = 600 << 10
	ownSmall    = 24 // small files of 1-24 KiB
)

// agentTree is agent i's directory: a ~1 MiB file and a few small ones that
// every agent has, and a ~1 MiB, a 600 KiB and small files of its own.
func agentTree(i int) map[string][]byte {
	files := map[string][]byte{
		"shared/common.bin": randomBytes(1_000_000, sharedBig),
		"own/big.bin":       randomBytes(uint64(i)*1000+1, ownBig),
		"own/mid.bin":       randomBytes(uint64(i)*1000+2, ownMid),
	}
	for j := range sharedSmall {
		files[fmt.Sprintf("shared/s%d.txt", j)] = randomBytes(2_000_000+uint64(j), 3000+j*700)
	}
	for j := range ownSmall {
		files[fmt.Sprintf("own/small/f%02d", j)] = randomBytes(uint64(i)*1000+100+uint64(j), (j+1)*1024)
	}
	return files
}

// sharedBytes is how much of each agent's directory every agent has.
func sharedBytes() int64 {
	n := int64(sharedBig)
	for j := range sharedSmall {
		n += int64(3000 + j*700)
	}
	return n
}

type agentRun struct {
	src   string
	files map[string][]byte
	v     *client.Vault
	res   *agent.BackupResult
	err   error
}

// runAgents backs up every run's directory at the same moment, each with
// its own client and token, and fails t unless all succeed.
func runAgents(t *testing.T, runs []*agentRun) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, r := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r.res, r.err = agent.Backup(ctx, r.v, agent.BackupOptions{Paths: []string{r.src}, Host: fmt.Sprintf("agent%d", i)})
		}()
	}
	began := time.Now()
	close(start)
	wg.Wait()
	for i, r := range runs {
		if r.err != nil {
			t.Errorf("agent %d: %v", i, r.err)
		} else if len(r.res.Warnings) > 0 {
			t.Errorf("agent %d: warnings %v", i, r.res.Warnings)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d concurrent backups in %v", len(runs), time.Since(began).Round(time.Millisecond))
}

// checkVault runs check --read-data on the server through the API.
func checkVault(t *testing.T, owner *client.Client, name string, snapshots int) {
	t.Helper()
	rep, err := owner.Vault(name).Check(context.Background(), true, nil)
	if err != nil {
		t.Fatalf("check %s: %v", name, err)
	}
	if len(rep.Errors) > 0 {
		t.Errorf("check %s --read-data: %q", name, rep.Errors)
	}
	if len(rep.Warnings) > 0 {
		t.Logf("check %s warnings: %q", name, rep.Warnings)
	}
	if rep.Snapshots != snapshots {
		t.Errorf("check %s: %d snapshots, want %d", name, rep.Snapshots, snapshots)
	}
}

// TestEightAgentsAtOnce: eight agents, each with its own client and
// backup-operator token, back up their own directories at the same time,
// first all into one vault (where the content they share is stored once),
// then each into its own vault. Every backup succeeds, check --read-data
// finds no error in any vault, and snapshots restore intact.
func TestEightAgentsAtOnce(t *testing.T) {
	const agents = 8
	env := servertest.Start(t)
	owner := env.Client(t, env.OwnerToken)
	srcs := make([]string, agents)
	trees := make([]map[string][]byte, agents)
	var total int64
	for i := range agents {
		srcs[i] = filepath.Join(t.TempDir(), fmt.Sprintf("agent%d", i))
		trees[i] = agentTree(i)
		writeTree(t, srcs[i], trees[i])
		total += treeSize(trees[i])
	}
	// Each distinct content counted once: what one vault must store.
	unique := total - (agents-1)*sharedBytes()

	t.Run("OneVault", func(t *testing.T) {
		ctx := context.Background()
		newVault(t, owner, "shared")
		runs := make([]*agentRun, agents)
		for i := range runs {
			c := env.Client(t, token(t, owner, "backup-operator", "shared"))
			v := c.Vault("shared")
			if err := v.LoadDedup(ctx); err != nil {
				t.Fatal(err)
			}
			runs[i] = &agentRun{src: srcs[i], files: trees[i], v: v}
		}
		runAgents(t, runs)

		var added uint64
		for _, r := range runs {
			added += r.res.Snapshot.BytesAdded
		}
		// Random content does not compress: what was added is the unique
		// content plus per-blob overhead and trees, never a shared
		// file twice.
		if added < uint64(unique) || added > uint64(unique)+uint64(unique)/50+256<<10 {
			t.Errorf("the agents added %d bytes in all for %d bytes of distinct content (%d in all directories)", added, unique, total)
		}
		vi, err := owner.Vault("shared").Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("one vault: %d bytes in the directories, %d distinct; the agents added %d, the vault stores %d", total, unique, added, vi.StoredBytes)
		if vi.Snapshots != agents {
			t.Errorf("%d snapshots, want %d", vi.Snapshots, agents)
		}
		if vi.StoredBytes < unique || vi.StoredBytes > total-sharedBytes() {
			t.Errorf("vault stores %d bytes: distinct content is %d, all directories %d (shared content stored more than once?)", vi.StoredBytes, unique, total)
		}
		checkVault(t, owner, "shared", agents)
		for _, i := range []int{0, agents - 1} {
			restoreAndCompare(t, runs[i].v, runs[i].res.Snapshot, srcs[i])
		}
	})

	t.Run("EightVaults", func(t *testing.T) {
		ctx := context.Background()
		runs := make([]*agentRun, agents)
		for i := range runs {
			name := fmt.Sprintf("v%d", i)
			v := env.Client(t, newVault(t, owner, name)).Vault(name)
			if err := v.LoadDedup(ctx); err != nil {
				t.Fatal(err)
			}
			runs[i] = &agentRun{src: srcs[i], files: trees[i], v: v}
		}
		runAgents(t, runs)

		var stored int64
		for i, r := range runs {
			name := fmt.Sprintf("v%d", i)
			vi, err := owner.Vault(name).Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// Vaults have their own chunk-ID keys: nothing is shared.
			if vi.StoredBytes < treeSize(r.files) {
				t.Errorf("vault %s stores %d bytes for a %d-byte directory", name, vi.StoredBytes, treeSize(r.files))
			}
			stored += vi.StoredBytes
			checkVault(t, owner, name, 1)
		}
		t.Logf("8 vaults store %d bytes for %d bytes of directories", stored, total)
		for _, i := range []int{1, agents - 2} {
			restoreAndCompare(t, runs[i].v, runs[i].res.Snapshot, srcs[i])
		}
	})
}
