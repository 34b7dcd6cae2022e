package srcvol

import (
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// These tests make real block devices: a file system image on a loop
// device, mounted, with and without fscrypt, and LUKS2 through
// device-mapper when the kernel offers it. They need root, losetup,
// mkfs.ext4 and mount; COFFER_REQUIRE_SERVICES turns a skip for a missing
// tool into a failure (CI installs them).

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	skip := func(why string) {
		t.Helper()
		if os.Getenv("COFFER_REQUIRE_SERVICES") != "" {
			t.Fatalf("%s; COFFER_REQUIRE_SERVICES is set", why)
		}
		t.Skip(why)
	}
	if os.Geteuid() != 0 {
		skip("needs root (loop devices and mount)")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			skip(tool + " is not installed (apt-get install mount e2fsprogs cryptsetup-bin)")
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// loopMount makes an ext4 image (with mkfsArgs), attaches it to a loop
// device and mounts it; all undone at the end of the test.
func loopMount(t *testing.T, mkfsArgs ...string) (dev, mnt string) {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 32<<20); err != nil {
		t.Fatal(err)
	}
	run(t, "mkfs.ext4", append(append([]string{"-q"}, mkfsArgs...), img)...)
	dev = run(t, "losetup", "--find", "--show", img)
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	mnt = filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if out, err := exec.Command("mount", dev, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount %s: %v: %s (the container forbids mounting)", dev, err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	return dev, mnt
}

// A file system on a loop device is what its backing file's volume is:
// here the test's temporary directory, whose answer the plain Detect of
// that directory gives.
func TestRealLoopDevice(t *testing.T) {
	needTools(t, "losetup", "mkfs.ext4", "mount", "umount")
	dev, mnt := loopMount(t)
	ctx := context.Background()
	v := Detect(ctx, filepath.Join(mnt, "not/yet/there"))
	under := Detect(ctx, filepath.Dir(mnt))
	if v.Mount != mnt || v.Device != dev || v.FSType != "ext4" {
		t.Fatalf("mount %q device %q type %q, want %s on %s, ext4", v.Mount, v.Device, v.FSType, dev, mnt)
	}
	if v.Encryption != under.Encryption || !strings.Contains(v.Detail, filepath.Base(dev)+" backed by ") {
		t.Fatalf("loop device: %+v\nits backing file's volume: %+v", v, under)
	}
	t.Logf("%+v", v)
}

// A directory with an fscrypt policy (ext4 made with -O encrypt, a v2
// policy set with the kernel's ioctls) is encrypted; its sibling is not.
func TestRealFscrypt(t *testing.T) {
	needTools(t, "losetup", "mkfs.ext4", "mount", "umount")
	_, mnt := loopMount(t, "-O", "encrypt")
	enc, plain := filepath.Join(mnt, "private"), filepath.Join(mnt, "public")
	os.Mkdir(enc, 0o700)
	os.Mkdir(plain, 0o700)
	setPolicy(t, mnt, enc)
	ctx := context.Background()
	if v := Detect(ctx, filepath.Join(enc, "notes.txt")); v.Encryption != "encrypted" || v.Method != "fscrypt" || !strings.Contains(v.Detail, "fscrypt policy v2 on "+enc) {
		t.Fatalf("fscrypt directory: %+v", v)
	}
	if v := Detect(ctx, plain); v.Encryption == "encrypted" {
		t.Fatalf("plain directory: %+v", v)
	}
}

func setPolicy(t *testing.T, mnt, dir string) {
	t.Helper()
	root, err := os.Open(mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	// struct fscrypt_add_key_arg followed by the raw key.
	var arg unix.FscryptAddKeyArg
	const keyLen = 64
	buf := make([]byte, int(unsafe.Sizeof(arg))+keyLen)
	a := (*unix.FscryptAddKeyArg)(unsafe.Pointer(&buf[0]))
	a.Key_spec.Type = unix.FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER
	a.Raw_size = keyLen
	rand.Read(buf[unsafe.Sizeof(arg):])
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, root.Fd(), unix.FS_IOC_ADD_ENCRYPTION_KEY, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		t.Skipf("FS_IOC_ADD_ENCRYPTION_KEY: %v (the kernel has no fscrypt)", errno)
	}
	t.Cleanup(func() {
		var rm unix.FscryptRemoveKeyArg
		rm.Key_spec = a.Key_spec
		unix.Syscall(unix.SYS_IOCTL, root.Fd(), unix.FS_IOC_REMOVE_ENCRYPTION_KEY, uintptr(unsafe.Pointer(&rm)))
	})
	p := unix.FscryptPolicyV2{Version: unix.FSCRYPT_POLICY_V2, Contents_encryption_mode: unix.FSCRYPT_MODE_AES_256_XTS,
		Filenames_encryption_mode: unix.FSCRYPT_MODE_AES_256_CTS, Flags: unix.FSCRYPT_POLICY_FLAGS_PAD_32}
	copy(p.Master_key_identifier[:], a.Key_spec.U[:16])
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, d.Fd(), unix.FS_IOC_SET_ENCRYPTION_POLICY, uintptr(unsafe.Pointer(&p))); errno != 0 {
		t.Fatalf("FS_IOC_SET_ENCRYPTION_POLICY: %v", errno)
	}
}

// LUKS2 through device-mapper: the loop device formatted with cryptsetup,
// opened, an ext4 file system on the mapping, mounted. Skipped when the
// kernel offers no device-mapper (as in containers without dm_mod), which
// no package installs.
func TestRealLUKS2(t *testing.T) {
	if _, err := os.Stat("/dev/mapper/control"); err != nil {
		t.Skip("no device-mapper in this kernel or container (/dev/mapper/control): LUKS is covered by the fixture layouts only")
	}
	needTools(t, "losetup", "mkfs.ext4", "mount", "umount", "cryptsetup")
	dir := t.TempDir()
	img, key := filepath.Join(dir, "luks.img"), filepath.Join(dir, "key")
	os.WriteFile(img, nil, 0o600)
	os.Truncate(img, 40<<20)
	k := make([]byte, 32)
	rand.Read(k)
	os.WriteFile(key, k, 0o600)
	dev := run(t, "losetup", "--find", "--show", img)
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	run(t, "cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", key, dev)
	name := "coffer-test-" + filepath.Base(dir)
	if out, err := exec.Command("cryptsetup", "open", "--key-file", key, dev, name).CombinedOutput(); err != nil {
		t.Skipf("cryptsetup open: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("cryptsetup", "close", name).Run() })
	run(t, "mkfs.ext4", "-q", "/dev/mapper/"+name)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	run(t, "mount", "/dev/mapper/"+name, mnt)
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	if v := Detect(context.Background(), mnt); v.Encryption != "encrypted" || v.Method != "luks2" {
		t.Fatalf("LUKS2 volume: %+v", v)
	}
}
