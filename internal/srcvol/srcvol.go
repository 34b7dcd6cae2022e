// Package srcvol finds the volume a backed-up path lives on and whether
// it is encrypted at rest: the agent's report about its own machine that
// each snapshot carries (vault.SourceFacts). It reads the system only
// (/proc, /sys, a few ioctls and commands) and never the vault.
//
// On Linux a path is encrypted when every block device beneath its file
// system is covered by a device-mapper crypt layer (LUKS1, LUKS2, plain
// dm-crypt, BitLocker or TrueCrypt through cryptsetup), when it lies in
// an fscrypt-encrypted directory, or when its file system encrypts
// (eCryptfs, gocryptfs, CryFS, EncFS, ZFS native encryption). Where the
// answer cannot be read (network and FUSE file systems, memory file
// systems, a device this code does not know) it says "unknown" and why;
// it never guesses "encrypted".
package srcvol

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/coffer-backup/coffer/internal/vault"
)

// Bounds of what a report holds (those format.CheckSource enforces).
const (
	maxPath   = 4096
	maxDevice = 1024
	maxFSType = 64
	maxDetail = 512
	// MaxVolumes is how many volumes one snapshot reports.
	MaxVolumes = 64
	// maxDepth bounds the walk down stacked devices and loop files.
	maxDepth = 16
)

// Detector finds volumes. Its zero value reads the running system; tests
// point the roots at fixture trees and replace the probes.
type Detector struct {
	// Proc and Sys are the roots of /proc and /sys ("" for the real ones).
	Proc, Sys string
	// Resolve makes a path absolute and resolves its symlinks (the
	// nearest existing ancestor's, for a path that does not exist); nil:
	// the file system's.
	Resolve func(path string) (string, error)
	// FSCrypt returns the fscrypt policy version (0: none) of path or,
	// when path does not exist, of its nearest existing ancestor, and
	// which directory it asked; nil: the ioctl (Linux).
	FSCrypt func(path string) (dir string, version int, err error)
	// ZFS returns the `encryption` property of a ZFS dataset ("off",
	// "aes-256-gcm", …); nil: `zfs get -H -o value encryption DATASET`.
	ZFS func(ctx context.Context, dataset string) (string, error)
}

// Detect finds the volume of path on this machine.
func Detect(ctx context.Context, path string) vault.SourceVolume {
	return Detector{}.Detect(ctx, path)
}

// Report finds the volumes of a snapshot's paths (sorted, absolute): one
// per path when there are at most MaxVolumes of them; otherwise one per
// distinct volume (the first path that lives on it), at most MaxVolumes.
func (d Detector) Report(ctx context.Context, paths []string) *vault.SourceFacts {
	f := &vault.SourceFacts{Volumes: []vault.SourceVolume{}}
	seen := map[[2]string]bool{}
	for _, p := range paths {
		if len(f.Volumes) >= MaxVolumes {
			break
		}
		v := d.Detect(ctx, p)
		if len(paths) > MaxVolumes {
			k := [2]string{v.Mount, v.Device}
			if seen[k] {
				continue
			}
			seen[k] = true
		}
		f.Volumes = append(f.Volumes, v)
	}
	return f
}

// Detect finds the volume of path.
func (d Detector) Detect(ctx context.Context, path string) vault.SourceVolume {
	v := d.detect(ctx, path, 0)
	v.Path = path
	return clean(v)
}

func unknown(v vault.SourceVolume, format string, a ...any) vault.SourceVolume {
	v.Encryption, v.Method, v.Detail = vault.VolumeUnknown, "", fmt.Sprintf(format, a...)
	return v
}

func (d Detector) proc() string {
	if d.Proc == "" {
		return "/proc"
	}
	return d.Proc
}

func (d Detector) sys() string {
	if d.Sys == "" {
		return "/sys"
	}
	return d.Sys
}

// clean keeps every string of v printable and within its bound, so that
// the report passes the vault's checks whatever a mount table holds
// (Linux allows control characters in mount points and device names).
func clean(v vault.SourceVolume) vault.SourceVolume {
	if !printable(v.Mount) || len(v.Mount) > maxPath || (v.Mount != "" && (v.Mount[0] != '/' || filepath.Clean(v.Mount) != v.Mount)) {
		v.Detail = "mount point not shown (unprintable or too long); " + v.Detail
		v.Mount = ""
	}
	v.Device = shorten(v.Device, maxDevice)
	v.FSType = shorten(v.FSType, maxFSType)
	v.Detail = shorten(v.Detail, maxDetail)
	return v
}

func printable(s string) bool {
	return utf8.ValidString(s) && strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }) < 0
}

// shorten replaces what is not printable by "?" and cuts s to max bytes.
func shorten(s string, max int) string {
	s = strings.ToValidUTF8(s, "?")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return '?'
		}
		return r
	}, s)
	if len(s) <= max {
		return s
	}
	cut := max - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// resolve is Resolve's default: the absolute path with the symlinks of
// its nearest existing ancestor resolved, the rest appended.
func resolve(p string) (string, error) {
	p, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	rest := ""
	for i := 0; i < maxPath; i++ {
		r, err := filepath.EvalSymlinks(p)
		if err == nil {
			return filepath.Join(r, rest), nil
		}
		if !os.IsNotExist(err) || p == "/" {
			return "", err
		}
		rest = filepath.Join(filepath.Base(p), rest)
		p = filepath.Dir(p)
	}
	return "", fmt.Errorf("%s: too deep", p)
}

// nearestExisting returns p or its nearest ancestor that exists.
func nearestExisting(p string) string {
	for i := 0; i < maxPath; i++ {
		if _, err := os.Lstat(p); err == nil || p == "/" || p == "." {
			return p
		}
		p = filepath.Dir(p)
	}
	return p
}
