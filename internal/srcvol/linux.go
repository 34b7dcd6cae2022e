package srcvol

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/coffer-backup/coffer/internal/vault"
)

// This file reads Linux's mount table and sysfs. It has no build tag:
// the fixture tests run it on any system against trees in testdata.

// File system types whose storage cannot be read from this machine.
var (
	networkFS = map[string]bool{"nfs": true, "nfs4": true, "cifs": true, "smb3": true, "smbfs": true, "9p": true,
		"ceph": true, "glusterfs": true, "afs": true, "lustre": true, "ncpfs": true, "davfs": true, "virtiofs": true}
	memoryFS  = map[string]bool{"tmpfs": true, "ramfs": true}
	virtualFS = map[string]bool{"proc": true, "sysfs": true, "devtmpfs": true, "devpts": true, "cgroup": true, "cgroup2": true,
		"debugfs": true, "tracefs": true, "securityfs": true, "pstore": true, "bpf": true, "configfs": true, "mqueue": true,
		"hugetlbfs": true, "autofs": true, "binfmt_misc": true, "efivarfs": true, "nsfs": true, "rpc_pipefs": true}
	// FUSE file systems that store only ciphertext beneath.
	fuseCrypt = map[string]string{"fuse.gocryptfs": "gocryptfs", "fuse.cryfs": "cryfs", "fuse.encfs": "encfs", "fuse.securefs": "securefs"}
)

// dm-crypt's UUID prefixes (cryptsetup: "CRYPT-<TYPE>-<uuid>-<name>") of
// the types that encrypt. CRYPT-VERITY and CRYPT-INTEGRITY only
// authenticate: they are layers to look beneath, like LVM.
var cryptPrefixes = []struct{ prefix, method string }{
	{"CRYPT-LUKS1-", "luks1"},
	{"CRYPT-LUKS2-", "luks2"},
	{"CRYPT-PLAIN-", "dm-crypt"},
	{"CRYPT-BITLK-", "bitlocker"},
	{"CRYPT-TCRYPT-", "tcrypt"},
}

// node is what the walk found of one block device and all beneath it.
type node struct {
	state  string // vault.Volume*
	method string
	desc   string
}

func (d Detector) detectLinux(ctx context.Context, path string, depth int) vault.SourceVolume {
	var v vault.SourceVolume
	res := d.Resolve
	if res == nil {
		res = resolve
	}
	real, err := res(path)
	if err != nil {
		return unknown(v, "cannot resolve the path: %v", err)
	}
	ms, err := readMounts(d.proc())
	if err != nil {
		return unknown(v, "cannot read the mount table: %v", err)
	}
	m, ok := findMount(ms, real)
	if !ok {
		return unknown(v, "no mount in the mount table holds %s", real)
	}
	v.Mount, v.Device, v.FSType = m.point, m.source, m.fstype
	n := d.mountNode(ctx, m, ms, depth)
	if n.state != vault.VolumeEncrypted {
		// A directory encrypted with fscrypt (ext4, f2fs, ubifs, btrfs)
		// is encrypted whatever lies beneath.
		if fn, ok := d.fscrypt(real); ok {
			n = fn
		} else if fn.desc != "" {
			n.desc += "; " + fn.desc
		}
	}
	v.Encryption, v.Method, v.Detail = n.state, n.method, n.desc
	if n.state != vault.VolumeEncrypted {
		v.Method = ""
	}
	if m.root != "/" && m.root != "" {
		v.Detail = fmt.Sprintf("bind mount of %s; %s", m.root, v.Detail)
	}
	return v
}

func (d Detector) fscrypt(real string) (node, bool) {
	probe := d.FSCrypt
	if probe == nil {
		probe = fscryptPolicy
	}
	dir, ver, err := probe(real)
	switch {
	case err != nil:
		return node{desc: fmt.Sprintf("fscrypt not checked: %v", err)}, false
	case ver > 0:
		return node{state: vault.VolumeEncrypted, method: "fscrypt", desc: fmt.Sprintf("fscrypt policy v%d on %s", ver, dir)}, true
	}
	return node{}, false
}

// mountNode decides by the file system type, then by the block devices.
func (d Detector) mountNode(ctx context.Context, m mount, ms []mount, depth int) node {
	t := m.fstype
	switch {
	case t == "ecryptfs":
		return node{vault.VolumeEncrypted, "ecryptfs", fmt.Sprintf("eCryptfs over %s", m.source)}
	case fuseCrypt[t] != "":
		return node{vault.VolumeEncrypted, fuseCrypt[t], fmt.Sprintf("%s (FUSE): only ciphertext is stored beneath", t)}
	case memoryFS[t]:
		return node{vault.VolumeUnknown, "", fmt.Sprintf("memory file system (%s): its pages may be written to swap, whose encryption is not checked", t)}
	case networkFS[t]:
		return node{vault.VolumeUnknown, "", fmt.Sprintf("network file system (%s from %s): the server's disks cannot be checked from here", t, m.source)}
	case t == "fuse" || strings.HasPrefix(t, "fuse.") || t == "fuseblk":
		return node{vault.VolumeUnknown, "", fmt.Sprintf("FUSE file system (%s from %s): where it stores data cannot be checked", t, m.source)}
	case virtualFS[t]:
		return node{vault.VolumeUnknown, "", fmt.Sprintf("virtual file system (%s): not stored on a disk", t)}
	case t == "overlay":
		return d.overlayNode(ctx, m, depth)
	case t == "zfs":
		return d.zfsNode(ctx, m.source)
	}
	name, err := d.blockName(m)
	if err != nil {
		return node{vault.VolumeUnknown, "", err.Error()}
	}
	names := []string{name}
	if t == "btrfs" {
		names = d.btrfsDevices(name)
	}
	var kids []node
	for _, n := range names {
		kids = append(kids, d.walk(ctx, n, depth, map[string]bool{}))
	}
	return combine(kids, "btrfs over ")
}

// blockName names the block device of a mount in sysfs: its device
// number's, or for a file system with an anonymous device number (btrfs
// shows 0:N) its source's.
func (d Detector) blockName(m mount) (string, error) {
	if m.major != 0 {
		l, err := os.Readlink(filepath.Join(d.sys(), "dev", "block", fmt.Sprintf("%d:%d", m.major, m.minor)))
		if err != nil {
			return "", fmt.Errorf("device %d:%d of %s is not a block device known to sysfs (%v)", m.major, m.minor, m.fstype, err)
		}
		return filepath.Base(l), nil
	}
	src := m.source
	if name, ok := strings.CutPrefix(src, "/dev/mapper/"); ok {
		// Device-mapper names map to dm-N through dm/name.
		ents, _ := os.ReadDir(filepath.Join(d.sys(), "class", "block"))
		for i, e := range ents {
			if i > 4096 {
				break
			}
			b, err := readBounded(filepath.Join(d.sys(), "class", "block", e.Name(), "dm", "name"), 4096)
			if err == nil && strings.TrimSpace(string(b)) == name {
				return e.Name(), nil
			}
		}
		return "", fmt.Errorf("device-mapper device %s is not in sysfs", src)
	}
	if name, ok := strings.CutPrefix(src, "/dev/"); ok && !strings.Contains(name, "/") {
		if _, err := os.Stat(filepath.Join(d.sys(), "class", "block", name)); err == nil {
			return name, nil
		}
	}
	return "", fmt.Errorf("%s from %q has no block device (device %d:%d)", m.fstype, src, m.major, m.minor)
}

// btrfsDevices returns every device of the btrfs file system that name
// belongs to (/sys/fs/btrfs/<fsid>/devices/), or just name.
func (d Detector) btrfsDevices(name string) []string {
	fss, _ := os.ReadDir(filepath.Join(d.sys(), "fs", "btrfs"))
	for i, fs := range fss {
		if i > 4096 {
			break
		}
		dir := filepath.Join(d.sys(), "fs", "btrfs", fs.Name(), "devices")
		if _, err := os.Lstat(filepath.Join(dir, name)); err != nil {
			continue
		}
		ents, err := os.ReadDir(dir)
		if err != nil || len(ents) == 0 {
			break
		}
		var out []string
		for j, e := range ents {
			if j >= 64 {
				break
			}
			out = append(out, e.Name())
		}
		return out
	}
	return []string{name}
}

// walk follows block device name down to every leaf: through
// device-mapper layers (LVM, multipath, integrity, verity…) and md RAID
// by their slaves, from a partition to its disk, from a loop device to
// its backing file. A crypt layer ends the walk: everything beneath it
// is ciphertext.
func (d Detector) walk(ctx context.Context, name string, depth int, seen map[string]bool) node {
	if depth > maxDepth || seen[name] || len(seen) > 256 {
		return node{vault.VolumeUnknown, "", fmt.Sprintf("%s: devices stacked too deep or in a loop", name)}
	}
	if err := ctx.Err(); err != nil {
		return node{vault.VolumeUnknown, "", err.Error()}
	}
	seen[name] = true
	dir, err := filepath.EvalSymlinks(filepath.Join(d.sys(), "class", "block", name))
	if err != nil {
		return node{vault.VolumeUnknown, "", fmt.Sprintf("block device %s is not in sysfs", name)}
	}
	label := name
	if b, err := readBounded(filepath.Join(dir, "dm", "uuid"), 4096); err == nil {
		uuid := strings.TrimSpace(string(b))
		dmName := ""
		if b, err := readBounded(filepath.Join(dir, "dm", "name"), 4096); err == nil {
			dmName = strings.TrimSpace(string(b))
		}
		for _, c := range cryptPrefixes {
			if strings.HasPrefix(uuid, c.prefix) {
				return node{vault.VolumeEncrypted, c.method, fmt.Sprintf("%s (%s %s)", name, strings.TrimSuffix(c.prefix, "-"), dmName)}
			}
		}
		kind, _, _ := strings.Cut(uuid, "-")
		if kind == "" {
			kind = "device-mapper"
		}
		label = fmt.Sprintf("%s (%s %s)", name, kind, dmName)
	}
	if b, err := readBounded(filepath.Join(dir, "loop", "backing_file"), 8192); err == nil {
		file := strings.TrimSuffix(string(b), "\n")
		if strings.HasSuffix(file, " (deleted)") || !strings.HasPrefix(file, "/") {
			return node{vault.VolumeUnknown, "", fmt.Sprintf("%s backed by %q, which cannot be looked at", name, file)}
		}
		v := d.detect(ctx, file, depth+1)
		return node{v.Encryption, v.Method, fmt.Sprintf("%s backed by %s on %s: %s", name, file, v.Mount, v.Detail)}
	}
	if md, err := readBounded(filepath.Join(dir, "md", "level"), 64); err == nil {
		label = fmt.Sprintf("%s (%s)", name, strings.TrimSpace(string(md)))
	}
	slaves, _ := os.ReadDir(filepath.Join(dir, "slaves"))
	if len(slaves) > 0 {
		var kids []node
		for i, s := range slaves {
			if i >= 64 {
				kids = append(kids, node{vault.VolumeUnknown, "", fmt.Sprintf("%s has more than 64 devices beneath", name)})
				break
			}
			kids = append(kids, d.walk(ctx, s.Name(), depth+1, seen))
		}
		return combine(kids, label+" over ")
	}
	if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil {
		parent := filepath.Base(filepath.Dir(dir))
		if _, err := os.Stat(filepath.Join(d.sys(), "class", "block", parent)); err != nil {
			return node{vault.VolumeUnknown, "", fmt.Sprintf("partition %s of an unknown disk", name)}
		}
		k := d.walk(ctx, parent, depth+1, seen)
		k.desc = fmt.Sprintf("%s (partition) of %s", name, k.desc)
		return k
	}
	if label != name {
		return node{vault.VolumeUnknown, "", fmt.Sprintf("%s without devices beneath", label)}
	}
	return node{vault.VolumeUnencrypted, "", fmt.Sprintf("%s: plain disk, no encryption layer (a self-encrypting drive is not detected)", name)}
}

// combine joins what lies beneath one device. Encrypted only when every
// path down is: a device with any plain leg (an LVM volume spanning a
// LUKS and a plain physical volume, a RAID 1 mirror with a plain member)
// has some or all of its data in the clear on that leg, so the mixed case
// is unencrypted; otherwise any leg not known makes it unknown.
func combine(kids []node, prefix string) node {
	if len(kids) == 1 {
		k := kids[0]
		if prefix != "btrfs over " {
			k.desc = prefix + k.desc
		}
		return k
	}
	sort.SliceStable(kids, func(i, j int) bool { return kids[i].desc < kids[j].desc })
	descs := make([]string, len(kids))
	state, method := vault.VolumeEncrypted, ""
	for i, k := range kids {
		descs[i] = k.desc
		switch {
		case k.state == vault.VolumeUnencrypted:
			state = vault.VolumeUnencrypted
		case k.state == vault.VolumeUnknown && state == vault.VolumeEncrypted:
			state = vault.VolumeUnknown
		}
		if method == "" {
			method = k.method
		}
	}
	out := node{state: state, desc: prefix + "[" + strings.Join(descs, "; ") + "]"}
	if state == vault.VolumeEncrypted {
		out.method = method
	}
	if state == vault.VolumeUnencrypted {
		out.desc = "not every device beneath is encrypted: " + out.desc
	}
	return out
}

// overlayNode checks an overlay's upper and lower directories: its files
// are read from all of them.
func (d Detector) overlayNode(ctx context.Context, m mount, depth int) node {
	var dirs []string
	if up, ok := superOpt(m.superOpts, "upperdir"); ok {
		dirs = append(dirs, up)
	}
	if low, ok := superOpt(m.superOpts, "lowerdir"); ok {
		for _, l := range strings.Split(low, ":") {
			if l != "" {
				dirs = append(dirs, l)
			}
		}
	}
	if len(dirs) == 0 {
		return node{vault.VolumeUnknown, "", "overlay whose layers the mount table does not show"}
	}
	var kids []node
	for i, dir := range dirs {
		if i >= 16 {
			kids = append(kids, node{vault.VolumeUnknown, "", "overlay of more than 16 layers"})
			break
		}
		v := d.detect(ctx, dir, depth+1)
		kids = append(kids, node{v.Encryption, v.Method, fmt.Sprintf("layer %s on %s: %s", dir, v.Mount, v.Detail)})
	}
	return combine(kids, "overlay of ")
}

func (d Detector) zfsNode(ctx context.Context, dataset string) node {
	probe := d.ZFS
	if probe == nil {
		probe = zfsEncryption
	}
	val, err := probe(ctx, dataset)
	switch {
	case err != nil:
		return node{vault.VolumeUnknown, "", fmt.Sprintf("ZFS dataset %s: encryption not read: %v", dataset, err)}
	case val == "off":
		return node{vault.VolumeUnencrypted, "", fmt.Sprintf("ZFS dataset %s: encryption off", dataset)}
	case val == "" || val == "-":
		return node{vault.VolumeUnknown, "", fmt.Sprintf("ZFS dataset %s: no encryption property", dataset)}
	}
	return node{vault.VolumeEncrypted, "zfs", fmt.Sprintf("ZFS native encryption (%s) on dataset %s", val, dataset)}
}
