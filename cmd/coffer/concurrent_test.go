package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// concurrentData writes a directory big enough for a backup to take a
// while (several packs) and to overlap with another.
func concurrentData(t *testing.T, seed uint64, mb int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), fmt.Sprintf("set%d", seed))
	writeFile(t, filepath.Join(dir, "big.bin"), randBytes(seed, mb<<20*2/3), 0o644)
	for i := range 100 {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("s%d", i%5), fmt.Sprintf("f%02d", i)), randBytes(seed*1000+uint64(i), (mb<<20)/300), 0o644)
	}
	return dir
}

type backupRun struct {
	stdout, stderr string
	code           int
}

// backupsAtOnce runs one backup per path at the same moment, in child
// processes or in goroutines of this process, and returns what each did.
func backupsAtOnce(t *testing.T, e *testEnv, inProcess bool, paths ...string) []backupRun {
	t.Helper()
	res := make([]backupRun, len(paths))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, p := range paths {
		args := []string{"backup", "--json", "--host", "conc", p}
		if inProcess {
			wg.Go(func() {
				<-start
				out, errOut, code := coffer(t, e, args...)
				res[i] = backupRun{out, errOut, code}
			})
			continue
		}
		cmd := child(t, e.home, args...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		wg.Go(func() {
			<-start
			err := cmd.Run()
			var ee *exec.ExitError
			code := 0
			switch {
			case errors.As(err, &ee):
				code = ee.ExitCode()
			case err != nil:
				code = -1
				errb.WriteString(err.Error())
			}
			res[i] = backupRun{out.String(), errb.String(), code}
		})
	}
	close(start)
	wg.Wait()
	return res
}

// TestConcurrentBackups runs two backups into one vault at once, of
// different directories and of the same one, as two processes and as two
// goroutines, into an existing vault and into one neither has created yet:
// both succeed, both snapshots are listed, the vault checks clean, and each
// snapshot restores its own data.
func TestConcurrentBackups(t *testing.T) {
	mb := 24
	if testing.Short() || raceEnabled {
		mb = 6
	}
	a := concurrentData(t, 1, mb)
	b := concurrentData(t, 2, mb)
	tiny := smallData(t)

	for _, mode := range []string{"processes", "goroutines"} {
		for _, vaultState := range []string{"existing vault", "new vault"} {
			for _, which := range []string{"different dirs", "same dir"} {
				t.Run(mode+"/"+vaultState+"/"+which, func(t *testing.T) {
					e := newEnv(t)
					if vaultState == "existing vault" {
						mustCoffer(t, e, "backup", tiny)
					}
					paths := []string{a, b}
					if which == "same dir" {
						paths = []string{a, a}
					}
					runs := backupsAtOnce(t, e, mode == "goroutines", paths...)
					var ids []string
					for i, r := range runs {
						var js struct {
							ID string `json:"snapshot_id"`
						}
						if r.code != exitOK || json.Unmarshal([]byte(r.stdout), &js) != nil {
							t.Errorf("backup %d of %s: exit %d\n%s%s", i, paths[i], r.code, r.stdout, r.stderr)
							continue
						}
						ids = append(ids, js.ID)
					}
					if t.Failed() {
						return
					}
					listed := map[string]bool{}
					for _, s := range listSnapshots(t, e) {
						listed[s.ID] = true
					}
					for _, id := range ids {
						if !listed[id] {
							t.Errorf("snapshot %s is not listed", id)
						}
					}
					out, errOut, code := coffer(t, e, "check", "--read-data")
					if code != exitOK {
						t.Fatalf("check --read-data: exit %d\n%s%s", code, out, errOut)
					}
					if strings.Contains(errOut, "error") {
						t.Errorf("check reports errors:\n%s", errOut)
					}
					for i, id := range ids {
						target := t.TempDir()
						mustCoffer(t, e, "restore", id, "--target", target)
						assertSameTree(t, paths[i], filepath.Join(target, paths[i]))
					}
				})
			}
		}
	}
}

// TestConcurrentFirstBackups repeats the race that creates a vault: two
// first backups of a few small files at once, many times over.
func TestConcurrentFirstBackups(t *testing.T) {
	tiny := smallData(t)
	rounds := 10
	if testing.Short() {
		rounds = 4
	}
	for _, mode := range []string{"processes", "goroutines"} {
		t.Run(mode, func(t *testing.T) {
			for range rounds {
				e := newEnv(t)
				for i, r := range backupsAtOnce(t, e, mode == "goroutines", tiny, tiny) {
					if r.code != exitOK {
						t.Errorf("first backup %d: exit %d\n%s", i, r.code, r.stderr)
					}
				}
				if n := len(listSnapshots(t, e)); n != 2 {
					t.Errorf("%d snapshots, want 2", n)
				}
				mustCoffer(t, e, "check", "--read-data")
			}
		})
	}
}
