package format

import (
	"errors"
	"fmt"
	"math"
	"path"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/coffer-backup/coffer/internal/vault"
)

// ErrInvalidSnapshot reports a snapshot record that may not be stored:
// a field out of range, a string with control characters, a server-owned
// field set by its writer. The server answers it with 400.
var ErrInvalidSnapshot = errors.New("invalid snapshot")

// Bounds of a snapshot record's fields (docs/openapi.yaml, saveSnapshot).
const (
	MaxSnapshotHost  = 255  // bytes
	MaxSnapshotPaths = 1024 // paths per snapshot
	MaxSnapshotPath  = 4096 // bytes per path (PATH_MAX)
	MaxSnapshotTags  = 64   // tags per snapshot
	MaxSnapshotTag   = 255  // bytes per tag

	// A source report (vault.SourceFacts, docs/format.md §8.7).
	MaxSourceVolumes   = 64   // volumes per report
	MaxSourceDevice    = 1024 // bytes
	MaxSourceFSType    = 64   // bytes
	MaxSourceMethod    = 32   // bytes: [a-z0-9-]
	MaxSourceDetail    = 512  // bytes
	MaxLocalCopies     = 1 << 16
	MaxLocalCopyCipher = 64 // bytes
)

// Snapshot times must lie where every layer can represent them: the
// catalog stores nanoseconds since 1970 in an int64 (up to 2262), and the
// sealed record uses RFC 3339 (years 0 to 9999).
var (
	minSnapshotTime = time.Unix(0, 0).UTC()
	maxSnapshotTime = time.Unix(0, math.MaxInt64).UTC()
)

// CheckSnapshot checks a new snapshot record before anything of it is
// written: its time in range, its host, paths and tags printable text
// (no control or bidi-formatting characters, which would reach other
// users' terminals), its paths absolute and clean (no "." or ".."
// element), sorted and unique as a backup records them, its counters and
// duration in range, its root tree set, and the server-owned deletion
// fields unset (a new snapshot is live). Errors wrap ErrInvalidSnapshot.
func CheckSnapshot(s vault.SnapshotRecord) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidSnapshot}, a...)...)
	}
	if s.Time.Before(minSnapshotTime) || s.Time.After(maxSnapshotTime) {
		return bad("time %s out of range (%d to %d)", s.Time.UTC().Format(time.RFC3339), minSnapshotTime.Year(), maxSnapshotTime.Year())
	}
	if err := checkText("host", s.Host, MaxSnapshotHost); err != nil {
		return bad("%v", err)
	}
	if len(s.Paths) == 0 || len(s.Paths) > MaxSnapshotPaths {
		return bad("%d paths: want 1 to %d", len(s.Paths), MaxSnapshotPaths)
	}
	for i, p := range s.Paths {
		if err := checkText("path", p, MaxSnapshotPath); err != nil {
			return bad("%v", err)
		}
		if p == "" || p[0] != '/' || path.Clean(p) != p {
			return bad("path %q: want an absolute path without \".\", \"..\", \"//\" or a trailing \"/\"", p)
		}
		if i > 0 && s.Paths[i-1] >= p {
			return bad("paths not sorted or repeated at %q", p)
		}
	}
	if len(s.Tags) > MaxSnapshotTags {
		return bad("%d tags: at most %d", len(s.Tags), MaxSnapshotTags)
	}
	seen := make(map[string]bool, len(s.Tags))
	for _, t := range s.Tags {
		if err := checkText("tag", t, MaxSnapshotTag); err != nil {
			return bad("%v", err)
		}
		if t == "" {
			return bad("empty tag")
		}
		if seen[t] {
			return bad("tag %q given twice", t)
		}
		seen[t] = true
	}
	if s.Tree.IsZero() {
		return bad("no root tree")
	}
	if err := CheckDomain(s.Domain); err != nil {
		return bad("%v", err)
	}
	if c := s.Copy; c != nil {
		if c.Vault.IsZero() || c.Snapshot.IsZero() {
			return bad("a copy names its source vault and snapshot")
		}
		if c.Time.Before(minSnapshotTime) || c.Time.After(maxSnapshotTime) {
			return bad("copied snapshot's time %s out of range", c.Time.UTC().Format(time.RFC3339))
		}
	}
	if err := CheckSource(s.Source, s.Paths); err != nil {
		return err
	}
	for _, c := range []struct {
		name string
		n    uint64
	}{{"files", s.Files}, {"dirs", s.Dirs}, {"bytes", s.Bytes}, {"bytes_added", s.BytesAdded}} {
		if c.n > math.MaxInt64 {
			return bad("%s %d out of range", c.name, c.n)
		}
	}
	if s.Duration < 0 {
		return bad("negative duration %s", s.Duration)
	}
	if !s.Deleted.IsZero() || s.DeletedBy != "" {
		return bad("a new snapshot is live: its deletion time and deleter are set by forget, never by its writer")
	}
	return nil
}

// checkText checks that s is valid UTF-8 of at most max bytes without
// control characters or invisible formatting characters (such as the
// bidi overrides that reorder what a terminal shows).
func checkText(what, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%s of %d bytes: at most %d", what, len(s), max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s %q is not valid UTF-8", what, s)
	}
	if i := strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }); i >= 0 {
		return fmt.Errorf("%s %q holds a control or formatting character at byte %d", what, s, i)
	}
	return nil
}

// CheckSource checks a snapshot's source report (nil is none) against
// the snapshot's paths: at most
// MaxSourceVolumes volumes, each for a distinct path of the snapshot;
// every string printable text within its bound (these reach other users'
// terminals and the posture report); the encryption one of the three
// states, with a method (lowercase letters, digits and "-") exactly when
// encrypted; the mount point absolute or empty (not found); the local
// copy counts in range. Errors wrap ErrInvalidSnapshot.
func CheckSource(f *vault.SourceFacts, paths []string) error {
	if f == nil {
		return nil
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: source report: "+format, append([]any{ErrInvalidSnapshot}, a...)...)
	}
	if len(f.Volumes) > MaxSourceVolumes {
		return bad("%d volumes: at most %d", len(f.Volumes), MaxSourceVolumes)
	}
	seen := make(map[string]bool, len(f.Volumes))
	for _, v := range f.Volumes {
		for _, t := range []struct {
			what string
			s    string
			max  int
		}{{"path", v.Path, MaxSnapshotPath}, {"mount", v.Mount, MaxSnapshotPath}, {"device", v.Device, MaxSourceDevice},
			{"fstype", v.FSType, MaxSourceFSType}, {"method", v.Method, MaxSourceMethod}, {"detail", v.Detail, MaxSourceDetail}} {
			if err := checkText(t.what, t.s, t.max); err != nil {
				return bad("%v", err)
			}
		}
		if !slices.Contains(paths, v.Path) {
			return bad("volume of path %q, which the snapshot does not hold", v.Path)
		}
		if seen[v.Path] {
			return bad("path %q reported twice", v.Path)
		}
		seen[v.Path] = true
		if v.Mount != "" && (v.Mount[0] != '/' || path.Clean(v.Mount) != v.Mount) {
			return bad("mount point %q: want an absolute clean path, or none", v.Mount)
		}
		switch v.Encryption {
		case vault.VolumeEncrypted:
			if v.Method == "" {
				return bad("encrypted volume of %q without its method", v.Path)
			}
		case vault.VolumeUnencrypted, vault.VolumeUnknown:
			if v.Method != "" {
				return bad("volume of %q: a method (%q) only for an encrypted volume", v.Path, v.Method)
			}
		default:
			return bad("volume of %q: encryption %q: want %q, %q or %q", v.Path, v.Encryption, vault.VolumeEncrypted, vault.VolumeUnencrypted, vault.VolumeUnknown)
		}
		if strings.IndexFunc(v.Method, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') }) >= 0 {
			return bad("method %q: want lowercase letters, digits and \"-\"", v.Method)
		}
	}
	if c := f.LocalCopies; c != nil {
		if c.Keep < 0 || c.Keep > MaxLocalCopies || c.Held < 0 || c.Held > MaxLocalCopies {
			return bad("local copies: keep %d, held %d: want 0 to %d", c.Keep, c.Held, MaxLocalCopies)
		}
		if err := checkText("local copies' cipher", c.Cipher, MaxLocalCopyCipher); err != nil {
			return bad("%v", err)
		}
	}
	return nil
}
