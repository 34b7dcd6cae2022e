package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/coffer-backup/coffer/internal/format"
)

// ExcludeRules choose what a backup leaves out (docs/operations.md,
// "Choosing what to back up"). The zero value leaves out nothing.
type ExcludeRules struct {
	// Patterns are gitignore-style patterns matched against each entry's
	// absolute path, in order: the last one that matches decides, and a
	// pattern starting with ! puts back what an earlier one left out.
	Patterns []ExcludePattern
	// IfPresent leaves out the contents of every directory holding a file
	// NAME (whose first bytes are HEADER, when one is given as
	// NAME:HEADER); the directory and that file are kept.
	IfPresent []string
	// Caches leaves out the contents of directories holding a valid
	// CACHEDIR.TAG (https://bford.info/cachedir/), keeping the tag.
	Caches bool
	// LargerThan, when not 0, leaves out regular files of more bytes.
	LargerThan uint64
	// OneFileSystem keeps the backup on the file systems of the given
	// paths: a directory where another one is mounted is saved empty.
	OneFileSystem bool
}

// ExcludePattern is one pattern and where it came from.
type ExcludePattern struct {
	Pattern    string
	IgnoreCase bool
	// Source names where the pattern came from in messages: "--exclude",
	// "--exclude-file /etc/coffer/excludes line 3".
	Source string
}

// cacheDirTag is the file and signature of the Cache Directory Tagging
// Specification.
const (
	cacheDirTag       = "CACHEDIR.TAG"
	cacheDirSignature = "Signature: 8a477f597d28d172789f06886806bc55"
)

// excluder is ExcludeRules compiled for one backup. Its methods are safe
// for concurrent use (the walk and the progress scan share it).
type excluder struct {
	pats       []*pattern
	fold       bool // some pattern ignores case: lower-case paths once
	tags       []tagRule
	largerThan uint64
	oneFS      bool
	devices    map[uint64]bool // of the given paths, with oneFS
}

type tagRule struct {
	name, header string
}

type segKind uint8

const (
	segLiteral  segKind = iota // no wildcard: compared as a string
	segAny                     // "*"
	segSuffix                  // "*.log"
	segPrefix                  // "cache*"
	segGlob                    // anything else filepath.Match understands
	segAnyDepth                // "**": any number of path components
)

// segment is one /-separated part of a pattern.
type segment struct {
	kind segKind
	s    string // the literal, the suffix, the prefix or the glob
	// need is text that every name a glob matches contains: checked
	// first, it spares most names filepath.Match.
	need string
}

func (s *segment) match(c string) bool {
	switch s.kind {
	case segLiteral:
		return c == s.s
	case segAny:
		return true
	case segSuffix:
		return strings.HasSuffix(c, s.s)
	case segPrefix:
		return strings.HasPrefix(c, s.s)
	default:
		if !strings.Contains(c, s.need) {
			return false
		}
		ok, _ := filepath.Match(s.s, c) // checked when compiled
		return ok
	}
}

type pattern struct {
	src      ExcludePattern
	segs     []segment
	negate   bool // !pattern
	dirOnly  bool // pattern/
	anchored bool // /pattern: from the root, not at any depth
	deep     bool // has a ** segment
	// With **: "/name" for each literal segment, which the path must
	// contain, and whether the last segment must match the base name.
	lits     []string
	lastName bool
	hit      atomic.Bool
}

// compilePattern parses one pattern. Syntax (docs/operations.md): the
// segments between slashes are filepath.Match globs (* ? [class] \escape),
// ** is any number of directories (one or more at the end), a leading / anchors
// the pattern at the root, a trailing / matches directories only, and a
// leading ! negates.
func compilePattern(p ExcludePattern) (*pattern, error) {
	bad := func(why string) error {
		src := p.Source
		if src == "" {
			src = "--exclude"
		}
		return fmt.Errorf("%s: bad pattern %q: %s", src, p.Pattern, why)
	}
	s := p.Pattern
	if p.IgnoreCase {
		s = strings.ToLower(s)
	}
	pt := &pattern{src: p}
	names := 0 // segments other than **
	if strings.HasPrefix(s, "!") {
		pt.negate = true
		s = s[1:]
	}
	if strings.HasSuffix(s, "/") {
		pt.dirOnly = true
		s = strings.TrimRight(s, "/")
	}
	if strings.HasPrefix(s, "/") {
		pt.anchored = true
	}
	for _, part := range strings.Split(s, "/") {
		switch part {
		case "", ".":
			continue // "a//b", "/a", "./a"
		case "..":
			return nil, bad(`".." cannot be matched: patterns match absolute paths without ".."`)
		case "**":
			if n := len(pt.segs); n > 0 && pt.segs[n-1].kind == segAnyDepth {
				continue // "**/**" is "**"
			}
			pt.segs = append(pt.segs, segment{kind: segAnyDepth})
			continue
		}
		if _, err := filepath.Match(part, ""); err != nil {
			return nil, bad(`a [ without its ], or a \ at the end (write \[ or \\ for the character itself)`)
		}
		pt.segs = append(pt.segs, classify(part))
		names++
	}
	if len(pt.segs) == 0 {
		return nil, bad("it names no file")
	}
	// A leading ** is what a pattern without / does anyway.
	if pt.segs[0].kind == segAnyDepth {
		pt.anchored = false
		pt.segs = pt.segs[1:]
		if len(pt.segs) == 0 { // "**": everything below the given paths
			pt.segs, names = []segment{{kind: segAny}}, 1
		}
	}
	pt.deep = len(pt.segs) > names
	if pt.deep && !pt.anchored {
		// Matching at any depth is an anchored match after a leading **.
		pt.segs = append([]segment{{kind: segAnyDepth}}, pt.segs...)
		pt.anchored = true
	}
	if pt.deep {
		for _, sg := range pt.segs {
			if sg.kind == segLiteral {
				pt.lits = append(pt.lits, "/"+sg.s)
			}
		}
		pt.lastName = pt.segs[len(pt.segs)-1].kind != segAnyDepth
	}
	return pt, nil
}

func classify(part string) segment {
	const meta = `*?[\`
	if !strings.ContainsAny(part, meta) {
		return segment{kind: segLiteral, s: part}
	}
	if part == "*" {
		return segment{kind: segAny}
	}
	if rest := part[1:]; part[0] == '*' && !strings.ContainsAny(rest, meta) {
		return segment{kind: segSuffix, s: rest}
	}
	if head := part[:len(part)-1]; part[len(part)-1] == '*' && !strings.ContainsAny(head, meta) {
		return segment{kind: segPrefix, s: head}
	}
	return segment{kind: segGlob, s: part, need: globNeed(part)}
}

// globNeed returns the longest run of plain characters before a glob's
// first character class: every name the glob matches contains it. (After
// a class, telling its end from a literal ] is not worth the risk.)
func globNeed(glob string) string {
	var best, cur []byte
	for i := 0; i < len(glob); i++ {
		switch c := glob[i]; c {
		case '[':
			i = len(glob)
		case '*', '?':
			cur = cur[:0]
			continue
		case '\\':
			if i+1 < len(glob) {
				i++
				c = glob[i]
			}
			cur = append(cur, c)
		default:
			cur = append(cur, c)
		}
		if len(cur) > len(best) {
			best = append(best[:0], cur...)
		}
	}
	return string(best)
}

// matches reports whether absolute path p matches the pattern, ignoring
// negation and the directories-only rule.
func (pt *pattern) matches(p string) bool {
	if pt.deep {
		// Cheap checks first: most paths fail them.
		for _, l := range pt.lits {
			if !strings.Contains(p, l) {
				return false
			}
		}
		if pt.lastName && !pt.segs[len(pt.segs)-1].match(p[strings.LastIndexByte(p, '/')+1:]) {
			return false
		}
		var buf [32]string
		return matchDeep(pt.segs, splitPath(buf[:0], p))
	}
	// Without **, the segments are the path's last components (or all of
	// them, anchored): compared from the end, with no allocation.
	rest := p
	for i := len(pt.segs) - 1; i >= 0; i-- {
		j := strings.LastIndexByte(rest, '/')
		if j < 0 || !pt.segs[i].match(rest[j+1:]) {
			return false
		}
		rest = rest[:j]
	}
	return !pt.anchored || rest == ""
}

func splitPath(buf []string, p string) []string {
	for p != "" {
		p = strings.TrimLeft(p, "/")
		if p == "" {
			break
		}
		i := strings.IndexByte(p, '/')
		if i < 0 {
			buf = append(buf, p)
			break
		}
		buf = append(buf, p[:i])
		p = p[i:]
	}
	return buf
}

// matchDeep matches segments with ** against path components. A ** at the
// end needs at least one component (gitignore: "dir/**" is what is inside
// dir, not dir itself).
func matchDeep(segs []segment, comps []string) bool {
	for len(segs) > 0 {
		s := &segs[0]
		if s.kind == segAnyDepth {
			rest := segs[1:]
			if len(rest) == 0 {
				return len(comps) > 0
			}
			need := 0
			for i := range rest {
				if rest[i].kind != segAnyDepth {
					need++
				}
			}
			for i := 0; i+need <= len(comps); i++ {
				if matchDeep(rest, comps[i:]) {
					return true
				}
			}
			return false
		}
		if len(comps) == 0 || !s.match(comps[0]) {
			return false
		}
		segs, comps = segs[1:], comps[1:]
	}
	return len(comps) == 0
}

// Check reports the first pattern or --exclude-if-present value that is
// malformed, so that a command can refuse it before it opens anything.
func (r ExcludeRules) Check() error {
	_, err := compileExcludes(ExcludeRules{Patterns: r.Patterns, IfPresent: r.IfPresent}, nil)
	return err
}

// compileExcludes checks and compiles the rules; paths are the paths given
// to back up, nested ones included: their devices are the ones
// OneFileSystem stays on.
func compileExcludes(r ExcludeRules, paths []string) (*excluder, error) {
	x := &excluder{largerThan: r.LargerThan, oneFS: r.OneFileSystem}
	for _, p := range r.Patterns {
		pt, err := compilePattern(p)
		if err != nil {
			return nil, err
		}
		x.pats = append(x.pats, pt)
		x.fold = x.fold || p.IgnoreCase
	}
	for _, s := range r.IfPresent {
		name, header, _ := strings.Cut(s, ":")
		if name == "" || !format.ValidName([]byte(name)) {
			return nil, fmt.Errorf("--exclude-if-present %q: give a file name (NAME or NAME:HEADER), not a path or a pattern", s)
		}
		x.tags = append(x.tags, tagRule{name, header})
	}
	if r.Caches {
		x.tags = append(x.tags, tagRule{cacheDirTag, cacheDirSignature})
	}
	if x.oneFS {
		x.devices = map[uint64]bool{}
		for _, p := range paths {
			st, err := lstat(p)
			if err != nil {
				return nil, fmt.Errorf("cannot back up %s: %w", p, err)
			}
			x.devices[st.Dev] = true
		}
	}
	return x, nil
}

// match reports whether the patterns leave out absolute path p, a
// directory when isDir is set.
func (x *excluder) match(p string, isDir bool) bool {
	if len(x.pats) == 0 {
		return false
	}
	lower := ""
	if x.fold {
		lower = strings.ToLower(p) // p itself when there is nothing to lower
	}
	out := false
	for _, pt := range x.pats {
		if pt.dirOnly && !isDir {
			continue
		}
		s := p
		if pt.src.IgnoreCase {
			s = lower
		}
		if pt.matches(s) {
			if !pt.hit.Load() { // a store only once: the flag is shared by the walk's readers
				pt.hit.Store(true)
			}
			out = !pt.negate
		}
	}
	return out
}

// excluded reports whether entry p (described by n) is left out by the
// patterns or by its size. The given paths are subject to this too.
func (x *excluder) excluded(p string, n *format.Node) bool {
	if x.largerThan > 0 && n.Kind == format.KindFile && n.Size > x.largerThan {
		return true
	}
	return x.match(p, n.Kind == format.KindDir)
}

// foreign reports whether an entry found in the walk lies on a file system
// other than the given paths' (with OneFileSystem).
func (x *excluder) foreign(st *unix.Stat_t) bool {
	return x.oneFS && !x.devices[st.Dev]
}

// contents returns the names of directory dir that the backup keeps: all
// of them, or (in a directory tagged by --exclude-caches or
// --exclude-if-present) only the tag files. names are sorted.
func (x *excluder) contents(dir string, names []string) []string {
	var keep []string
	for _, t := range x.tags {
		i := sort.SearchStrings(names, t.name)
		if i == len(names) || names[i] != t.name || !hasHeader(filepath.Join(dir, t.name), t.header) {
			continue
		}
		if !containsString(keep, t.name) {
			keep = append(keep, t.name)
		}
	}
	if keep == nil {
		return names
	}
	sort.Strings(keep)
	return keep
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// hasHeader reports whether file p starts with header (any file does when
// header is empty). A symlink is not followed: it is no tag.
func hasHeader(p, header string) bool {
	if header == "" {
		return true
	}
	f, err := openFile(p)
	if err != nil {
		return false
	}
	defer f.Close()
	buf := make([]byte, len(header))
	if _, err := io.ReadFull(f, buf); err != nil {
		return false
	}
	return string(buf) == header
}

// warnUnmatched reports each pattern that matched no path of the backup: a
// pattern that matches nothing is most often a mistake (a relative path
// where an absolute one was meant, a missing **).
func (x *excluder) warnUnmatched(warn func(Warning)) {
	for _, pt := range x.pats {
		if pt.hit.Load() {
			continue
		}
		src := pt.src.Source
		if src == "" {
			src = "--exclude"
		}
		warn(Warning{Path: fmt.Sprintf("%s %q", src, pt.src.Pattern), Err: errNoMatch})
	}
}

var errNoMatch = errors.New("matched nothing in this backup (patterns match absolute paths; see coffer help backup)")

// mountPoint saves directory path, where another file system is mounted
// (OneFileSystem), as an empty directory: a restore recreates the mount
// point, not what was mounted there.
func (b *backup) mountPoint(ctx context.Context, path string, n *format.Node) *treeFuture {
	b.dirs.Add(1)
	return chainSubtree(b.finishDir(ctx, path, nil, nil), n)
}
