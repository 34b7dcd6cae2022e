package format

import (
	"errors"
	"fmt"
	"math"
	"path"
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
