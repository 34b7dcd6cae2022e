package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/srcvol"
)

// fixtureMachine is a machine, as /proc and /sys show it, whose root file
// system is a plain (unencrypted) partition, /dev/sda1, and where each
// directory of luks is the mount point of its own LUKS2 mapping on a
// partition of the same disk. A backup made with it reports what the
// agent's real detection (srcvol) finds on such a machine.
func fixtureMachine(t testing.TB, luks ...string) srcvol.Detector {
	t.Helper()
	root := t.TempDir()
	sys, proc := filepath.Join(root, "sys"), filepath.Join(root, "proc")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, content string) {
		must(os.MkdirAll(filepath.Dir(p), 0o755))
		must(os.WriteFile(p, []byte(content+"\n"), 0o644))
	}
	link := func(p, target string) {
		must(os.MkdirAll(filepath.Dir(p), 0o755))
		must(os.Symlink(target, p))
	}
	blockdev := func(name, devpath, majmin string) string {
		dir := filepath.Join(sys, "devices", devpath)
		write(filepath.Join(dir, "dev"), majmin)
		link(filepath.Join(sys, "class", "block", name), "../../devices/"+devpath)
		link(filepath.Join(sys, "dev", "block", majmin), "../../devices/"+devpath)
		return dir
	}
	const disk = "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda"
	blockdev("sda", disk, "8:0")
	write(filepath.Join(blockdev("sda1", disk+"/sda1", "8:1"), "partition"), "1")
	mounts := []string{"27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw"}
	for i, dir := range luks {
		part := fmt.Sprintf("sda%d", i+2)
		pdir := blockdev(part, disk+"/"+part, fmt.Sprintf("8:%d", i+2))
		write(filepath.Join(pdir, "partition"), fmt.Sprint(i+2))
		name := fmt.Sprintf("crypt%d", i)
		dm := blockdev(fmt.Sprintf("dm-%d", i), fmt.Sprintf("virtual/block/dm-%d", i), fmt.Sprintf("253:%d", i))
		write(filepath.Join(dm, "dm", "uuid"), fmt.Sprintf("CRYPT-LUKS2-%032x-%s", i+1, name))
		write(filepath.Join(dm, "dm", "name"), name)
		rel, err := filepath.Rel(filepath.Join(dm, "slaves"), pdir)
		must(err)
		link(filepath.Join(dm, "slaves", part), rel)
		if strings.ContainsAny(dir, " \t\n\\") {
			t.Fatalf("fixture mount point %q needs escaping", dir)
		}
		mounts = append(mounts, fmt.Sprintf("%d 27 253:%d / %s rw,relatime - ext4 /dev/mapper/%s rw", 30+i, i, dir, name))
	}
	write(filepath.Join(proc, "self", "mountinfo"), strings.Join(mounts, "\n"))
	return srcvol.Detector{
		Proc: proc, Sys: sys,
		Resolve: func(p string) (string, error) { return filepath.Abs(p) },
		FSCrypt: func(p string) (string, int, error) { return p, 0, nil },
	}
}
