package srcvol

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/coffer-backup/coffer/internal/vault"
)

func (d Detector) detect(ctx context.Context, path string, depth int) vault.SourceVolume {
	return d.detectLinux(ctx, path, depth)
}

// fscryptPolicy asks the kernel for the fscrypt policy of path or its
// nearest existing ancestor (FS_IOC_GET_ENCRYPTION_POLICY_EX).
func fscryptPolicy(path string) (string, int, error) {
	path = nearestExisting(path)
	v, err := fscryptVersion(path)
	return path, v, err
}

func fscryptVersion(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var arg unix.FscryptGetPolicyExArg
	arg.Size = uint64(len(arg.Policy))
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.FS_IOC_GET_ENCRYPTION_POLICY_EX, uintptr(unsafe.Pointer(&arg)))
	switch errno {
	case 0:
		v := int(arg.Policy[0]) // FSCRYPT_POLICY_V1 is 0, V2 is 2
		if v == unix.FSCRYPT_POLICY_V1 {
			v = 1
		}
		return v, nil
	case unix.ENODATA:
		return 0, nil // no policy: not encrypted
	case unix.ENOTTY, unix.EOPNOTSUPP, unix.EINVAL:
		return 0, nil // the file system has no fscrypt
	}
	return 0, fmt.Errorf("FS_IOC_GET_ENCRYPTION_POLICY_EX on %s: %w", path, errno)
}

// zfsEncryption runs `zfs get -H -o value encryption DATASET`.
func zfsEncryption(ctx context.Context, dataset string) (string, error) {
	bin, err := exec.LookPath("zfs")
	if err != nil {
		return "", errors.New("the zfs command is not installed")
	}
	if strings.HasPrefix(dataset, "-") {
		return "", fmt.Errorf("dataset %q", dataset)
	}
	out, err := exec.CommandContext(ctx, bin, "get", "-H", "-o", "value", "encryption", dataset).Output()
	if err != nil {
		return "", fmt.Errorf("zfs get: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}
