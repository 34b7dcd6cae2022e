package main

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
)

// child returns a command that runs the test binary as coffer (TestMain)
// with COFFER_HOME=home and nothing else from the environment.
func child(t *testing.T, home string, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = []string{"COFFER_TEST_MAIN=1", "COFFER_HOME=" + home}
	return cmd
}

// runChild runs coffer in a child process and returns its output and
// exit code.
func runChild(t *testing.T, home string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := child(t, home, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("run coffer %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// envInt reads a positive integer knob from the environment.
func envInt(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

// crashDataset writes about size bytes: one large random file (60%), and
// a few hundred small files, half random and half compressible text, in
// a few directories.
func crashDataset(t *testing.T, size int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "dataset")
	big := size * 6 / 10
	writeFile(t, filepath.Join(dir, "big.bin"), randBytes(100, big), 0o644)
	rest := size - big
	n := 300
	per := rest / n
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("d%02d", i%12), fmt.Sprintf("f%03d", i))
		sz := per/2 + (i*7919)%per // between per/2 and 1.5 per
		var b []byte
		if i%2 == 0 {
			b = randBytes(uint64(1000+i), sz)
		} else {
			line := fmt.Sprintf("line of file %d, which compresses well; ", i)
			b = bytes.Repeat([]byte(line), sz/len(line)+1)[:sz]
		}
		writeFile(t, p, b, 0o644)
	}
	return dir
}

// TestCrashDuringBackup kills a backup with SIGKILL at moments spread over
// its duration and checks that the vault stays sound: check --read-data
// passes (leftover unreferenced packs are only warnings), and the next
// backup completes, verifies and restores.
//
// Knobs: COFFER_CRASH_MB (dataset size, default 200, 24 with -short),
// COFFER_CRASH_RUNS (kills, default 10, 4 with -short), COFFER_CRASH_SEED.
func TestCrashDuringBackup(t *testing.T) {
	mb, runs := 200, 10
	if testing.Short() {
		mb, runs = 24, 4
	}
	if raceEnabled {
		mb, runs = 32, 5 // the race detector slows the children tenfold
	}
	mb = envInt(t, "COFFER_CRASH_MB", mb)
	runs = envInt(t, "COFFER_CRASH_RUNS", runs)
	seed := uint64(envInt(t, "COFFER_CRASH_SEED", int(time.Now().UnixNano()%1e9)))
	t.Logf("dataset %d MiB, %d kills, COFFER_CRASH_SEED=%d", mb, runs, seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	data := crashDataset(t, mb<<20)
	tiny := smallData(t)

	// How long does a whole backup of the dataset into an existing vault
	// take here, now?
	calib := t.TempDir()
	if out, errOut, code := runChild(t, calib, "backup", tiny, "--host", "crash"); code != exitOK {
		t.Fatalf("first backup: exit %d\n%s%s", code, out, errOut)
	}
	start := time.Now()
	if out, errOut, code := runChild(t, calib, "backup", data, "--host", "crash"); code != exitOK {
		t.Fatalf("calibration backup: exit %d\n%s%s", code, out, errOut)
	}
	full := time.Since(start)
	t.Logf("a whole backup takes %v", full)

	killed := 0
	for i := range runs {
		// Stratified: run i is killed somewhere in the i-th slice of the
		// backup's duration.
		delay := time.Duration((float64(i) + rng.Float64()) / float64(runs) * float64(full))
		t.Run(fmt.Sprintf("kill%02d_after_%v", i, delay.Round(time.Millisecond)), func(t *testing.T) {
			home := t.TempDir()
			// The vault exists already: the kill lands in the backup
			// proper, not in the vault's creation.
			if out, errOut, code := runChild(t, home, "backup", tiny, "--host", "crash"); code != exitOK {
				t.Fatalf("first backup: exit %d\n%s%s", code, out, errOut)
			}
			cmd := child(t, home, "backup", data, "--host", "crash")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(delay)
			cmd.Process.Signal(syscall.SIGKILL)
			err := cmd.Wait()
			var ee *exec.ExitError
			if errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled() {
				killed++
			} else {
				t.Logf("the backup finished before the kill (%v): %s", err, out.String())
			}

			e := &testEnv{home: home, vars: map[string]string{"COFFER_HOME": home}, clock: time.Now()}
			out2, errOut, code := coffer(t, e, "check", "--read-data")
			if code != exitOK {
				t.Fatalf("check --read-data after the kill: exit %d\n%s%s", code, out2, errOut)
			}
			for _, l := range strings.Split(strings.TrimSpace(errOut), "\n") {
				if l != "" && !strings.Contains(l, "not in the catalog") {
					t.Errorf("check after the kill warns of more than leftovers: %s", l)
				}
			}

			// The next backup completes; the vault verifies and restores.
			if out, errOut, code := coffer(t, e, "backup", data, "--host", "crash"); code != exitOK {
				t.Fatalf("backup after the kill: exit %d\n%s%s", code, out, errOut)
			}
			if out, errOut, code := coffer(t, e, "check", "--read-data"); code != exitOK {
				t.Fatalf("check --read-data after the next backup: exit %d\n%s%s", code, out, errOut)
			}
			// Restoring every run's data costs a second or two; the
			// first, a middle and the last run are enough.
			if i == 0 || i == runs/2 || i == runs-1 {
				target := t.TempDir()
				mustCoffer(t, e, "restore", "latest", "--host", "crash", "--target", target)
				assertSameTree(t, data, filepath.Join(target, data))
			}
		})
	}
	t.Logf("%d of %d backups were killed mid-way", killed, runs)
	if killed == 0 {
		t.Errorf("no backup was killed before it finished: the test exercised nothing")
	}
}

// TestCrashDuringVaultCreation recreates what a first backup killed while
// it creates the vault leaves behind (the steps are: key file, vault
// directory and catalog file, store/config, store/keys/0000000001, the
// catalog's vault record) and checks that the next backup still works.
func TestCrashDuringVaultCreation(t *testing.T) {
	data := smallData(t)
	cases := []struct {
		name string
		keep []string // what the killed creation left, relative to the vault directory
	}{
		{"key file only", nil},
		{"empty catalog and store", []string{"catalog.db", "store"}},
		{"config written", []string{"catalog.db", "store", "store/config"}},
		{"config and keyring written", []string{"catalog.db", "store", "store/config", "store/keys", "store/keys/0000000001"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			// A real creation, then everything it did after the kill
			// point removed. The catalog keeps its schema but no vault.
			mustCoffer(t, e, "backup", filepath.Join(data, "a.txt"))
			keep := map[string]bool{}
			for _, k := range c.keep {
				keep[filepath.Join(e.vaultDir(), k)] = true
			}
			var remove []string
			filepath.Walk(e.vaultDir(), func(p string, fi os.FileInfo, err error) error {
				if err == nil && p != e.vaultDir() && !keep[p] && !strings.HasPrefix(p, filepath.Join(e.vaultDir(), "catalog.db")) {
					remove = append(remove, p)
				}
				return nil
			})
			for i := len(remove) - 1; i >= 0; i-- {
				os.RemoveAll(remove[i])
			}
			// A killed creation saved no snapshot, so pinned no
			// snapshot chain (the real backup above did).
			os.RemoveAll(filepath.Join(e.home, "chain"))
			// Nor a keyring it did not store (the pin follows the
			// keyring's store write and its anchor).
			if !keep[filepath.Join(e.vaultDir(), "store/keys/0000000001")] {
				os.RemoveAll(filepath.Join(e.home, "keyring"))
			}
			if !keep[filepath.Join(e.vaultDir(), "catalog.db")] {
				os.Remove(filepath.Join(e.vaultDir(), "catalog.db"))
			} else {
				emptyCatalog(t, e)
			}
			// Old enough that nothing waits for a creation under way.
			old := time.Now().Add(-time.Hour)
			filepath.Walk(e.home, func(p string, _ os.FileInfo, _ error) error { os.Chtimes(p, old, old); return nil })

			out, errOut, code := coffer(t, e, "backup", data)
			if code != exitOK {
				t.Fatalf("backup after an interrupted creation: exit %d\n%s%s", code, out, errOut)
			}
			mustCoffer(t, e, "check", "--read-data")
		})
	}
}

// emptyCatalog replaces e's catalog with one that has the schema and no
// vault, as a creation killed before it recorded the vault leaves it.
func emptyCatalog(t *testing.T, e *testEnv) {
	t.Helper()
	path := catalogPath(e.vaultDir())
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(path + suffix)
	}
	cat, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	cat.Close()
}
