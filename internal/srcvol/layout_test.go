package srcvol

import (
	"bufio"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fixture builds the /proc and /sys trees a layout file describes
// (testdata/layouts/*.txt) and returns a Detector reading them, and the
// answers the file wants.
func fixture(t testing.TB, file string) (Detector, [][4]string) {
	t.Helper()
	root := t.TempDir()
	sys, proc := filepath.Join(root, "sys"), filepath.Join(root, "proc")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
	}
	write := func(p, content string) {
		must(os.MkdirAll(filepath.Dir(p), 0o755))
		must(os.WriteFile(p, []byte(content), 0o644))
	}
	link := func(p, target string) {
		must(os.MkdirAll(filepath.Dir(p), 0o755))
		must(os.Symlink(target, p))
	}
	resolved := func(name string) string {
		r, err := filepath.EvalSymlinks(filepath.Join(sys, "class", "block", name))
		must(err)
		return r
	}
	fscrypt := map[string]bool{}
	zfs := map[string]string{}
	var mounts []string
	var wants [][4]string
	f, err := os.Open(file)
	must(err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		cmd, rest, _ := strings.Cut(line, " ")
		a := strings.Fields(rest)
		switch cmd {
		case "mount":
			mounts = append(mounts, rest)
		case "blockdev": // NAME DEVPATH MAJ:MIN
			dev := filepath.Join(sys, "devices", a[1])
			must(os.MkdirAll(dev, 0o755))
			write(filepath.Join(dev, "dev"), a[2]+"\n")
			link(filepath.Join(sys, "class", "block", a[0]), "../../devices/"+a[1])
			link(filepath.Join(sys, "dev", "block", a[2]), "../../devices/"+a[1])
		case "partition":
			write(filepath.Join(resolved(a[0]), "partition"), "1\n")
		case "dm": // NAME UUID DMNAME
			write(filepath.Join(resolved(a[0]), "dm", "uuid"), a[1]+"\n")
			write(filepath.Join(resolved(a[0]), "dm", "name"), a[2]+"\n")
		case "slave": // NAME CHILD
			from := filepath.Join(resolved(a[0]), "slaves")
			rel, err := filepath.Rel(from, resolved(a[1]))
			must(err)
			link(filepath.Join(from, a[1]), rel)
		case "file":
			p, content, _ := strings.Cut(rest, " ")
			write(filepath.Join(root, p), content+"\n")
		case "link":
			link(filepath.Join(root, a[0]), a[1])
		case "fscrypt":
			fscrypt[a[0]] = true
		case "zfs":
			zfs[a[0]] = a[1]
		case "want":
			p := strings.SplitN(rest, " | ", 4)
			if len(p) != 4 {
				t.Fatalf("%s: bad want line %q", file, line)
			}
			wants = append(wants, [4]string{p[0], p[1], p[2], p[3]})
		default:
			t.Fatalf("%s: unknown directive %q", file, cmd)
		}
	}
	must(sc.Err())
	write(filepath.Join(proc, "self", "mountinfo"), strings.Join(mounts, "\n")+"\n")
	d := Detector{
		Proc: proc, Sys: sys,
		Resolve: func(p string) (string, error) { return p, nil },
		FSCrypt: func(p string) (string, int, error) {
			for dir := p; ; dir = filepath.Dir(dir) {
				if fscrypt[dir] {
					return dir, 2, nil
				}
				if dir == "/" {
					return p, 0, nil
				}
			}
		},
		ZFS: func(_ context.Context, ds string) (string, error) {
			if v, ok := zfs[ds]; ok {
				return v, nil
			}
			return "", errors.New("no such dataset")
		},
	}
	return d, wants
}

// TestLayouts reads the answer for each path of each fixture layout: the
// device-mapper chain (LUKS1/LUKS2/plain dm-crypt, LVM on LUKS, LUKS on
// LVM, a logical volume spanning LUKS and plain), md RAID, partitions,
// bind mounts, btrfs over several devices, fscrypt, eCryptfs, ZFS, FUSE,
// network and memory file systems, overlays.
func TestLayouts(t *testing.T) {
	files, err := filepath.Glob("testdata/layouts/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no layouts: %v", err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			d, wants := fixture(t, file)
			if len(wants) == 0 {
				t.Fatal("the layout wants nothing")
			}
			for _, w := range wants {
				v := d.Detect(context.Background(), w[0])
				method := v.Method
				if method == "" {
					method = "-"
				}
				if v.Path != w[0] || v.Encryption != w[1] || method != w[2] || !strings.Contains(v.Detail, w[3]) {
					t.Errorf("%s: got %s %s (mount %s, device %s, %s): %q\nwant %s %s, detail with %q", w[0], v.Encryption, method, v.Mount, v.Device, v.FSType, v.Detail, w[1], w[2], w[3])
				}
			}
		})
	}
}

// A mount table is the machine's, but its strings (mount points, device
// names) may hold anything Linux allows, including terminal escapes: the
// report never carries them, and never exceeds its bounds.
func TestAttackHostileMountStrings(t *testing.T) {
	layout := filepath.Join(t.TempDir(), "hostile.txt")
	long := strings.Repeat("d", 3000)
	os.WriteFile(layout, []byte(strings.Join([]string{
		`mount 27 1 254:0 / / rw - ext4 /dev/vda rw`,
		"mount 28 27 0:40 / /mnt/evil\x1b[2J rw - nfs4 srv:/\x1b]0;owned\x07" + long + " rw",
		`blockdev vda pci0/block/vda 254:0`,
	}, "\n")+"\n"), 0o644)
	d, _ := fixture(t, layout)
	v := d.Detect(context.Background(), "/mnt/evil\x1b[2J/x")
	if v.Encryption != "unknown" || v.Mount != "" || !printable(v.Device) || !printable(v.Detail) || len(v.Device) > maxDevice || len(v.Detail) > maxDetail {
		t.Fatalf("hostile strings passed: %+v", v)
	}
	if !strings.Contains(v.Detail, "mount point not shown") {
		t.Errorf("detail: %q", v.Detail)
	}
}

// Malformed mount tables are errors (an unknown answer), never a panic.
func FuzzParseMountLine(f *testing.F) {
	f.Add("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue")
	f.Add("1 2 3:4 / / - ")
	f.Add(`1 2 0:1 /a\040b /\134 rw - x y z`)
	f.Fuzz(func(t *testing.T, line string) {
		m, err := parseMountLine(line)
		if err == nil && m.fstype == "" && !strings.Contains(line, " - ") {
			t.Fatalf("accepted %q", line)
		}
		superOpt(line, "upperdir")
	})
}

func TestParseMountLine(t *testing.T) {
	m, err := parseMountLine(`36 35 98:0 /mnt1 /mnt\040two rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue`)
	if err != nil || m.major != 98 || m.minor != 0 || m.root != "/mnt1" || m.point != "/mnt two" || m.fstype != "ext3" || m.source != "/dev/root" {
		t.Fatalf("%+v %v", m, err)
	}
	for _, bad := range []string{"", "1 2 3", "1 2 x:y / / rw - ext4 /dev/a rw", "1 2 3:4 / / rw ext4 /dev/a rw", "1 2 3:4 / / rw -"} {
		if _, err := parseMountLine(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if v, ok := superOpt(`rw,lowerdir=/a\,b:/c,upperdir=/u`, "lowerdir"); !ok || v != "/a,b:/c" {
		t.Errorf("lowerdir %q", v)
	}
	ms := []mount{{point: "/"}, {point: "/home"}, {point: "/home/ann", source: "a"}, {point: "/home/ann", source: "b"}, {point: "/home/anna"}}
	for p, want := range map[string]string{"/home/ann/x": "b", "/home/annx": "", "/home/ann": "b"} {
		if m, _ := findMount(ms, p); m.source != want {
			t.Errorf("%s: mount %+v", p, m)
		}
	}
}
