package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// --- --vault DIR never adopts a directory that holds something else ------

func TestVaultDirRefusesNonEmptyDirectory(t *testing.T) {
	data := smallData(t)
	for _, cmd := range [][]string{{"backup", data}, {"vault", "create"}} {
		t.Run(cmd[0], func(t *testing.T) {
			e := newEnv(t)
			dir := filepath.Join(t.TempDir(), "project")
			writeFile(t, filepath.Join(dir, "notes.txt"), []byte("mine\n"), 0o644)
			args := append([]string{}, cmd...)
			if cmd[0] == "vault" {
				args = append(args, dir)
			} else {
				args = append(args, "--vault", dir)
			}
			out, errOut, code := coffer(t, e, args...)
			if code != exitFailure {
				t.Fatalf("%v into a non-empty directory: exit %d, want 1\n%s%s", args, code, out, errOut)
			}
			if !strings.Contains(errOut, dir) || !strings.Contains(errOut, "not empty") || !strings.Contains(errOut, "empty or new directory") {
				t.Errorf("the message does not say what is wrong and what to do: %q", errOut)
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) != 1 {
				t.Errorf("the directory was changed: %d entries", len(ents))
			}
			if _, err := os.Lstat(e.keyFile()); err == nil {
				t.Errorf("a refused backup created the key file")
			}
		})
	}
	// An empty directory, and a directory whose vault creation was cut
	// short (its store but no config), are fine.
	e := newEnv(t)
	empty := t.TempDir()
	mustCoffer(t, e, "backup", data, "--vault", empty)
	half := t.TempDir()
	if err := os.MkdirAll(filepath.Join(half, "store", "packs"), 0o700); err != nil {
		t.Fatal(err)
	}
	mustCoffer(t, e, "backup", data, "--vault", half)
	// And a vault stays a vault.
	mustCoffer(t, e, "backup", data, "--vault", empty)
}

// TestVaultDirRefusesForeignStore: a directory whose "store" holds
// something other than a vault's objects is not adopted either.
func TestVaultDirRefusesForeignStore(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "store", "inventory.csv"), []byte("a,b\n"), 0o644)
	if _, errOut, code := coffer(t, e, "backup", smallData(t), "--vault", dir); code != exitFailure || !strings.Contains(errOut, "not empty") {
		t.Fatalf("backup into a directory with a foreign store/: exit %d, %q", code, errOut)
	}
}
