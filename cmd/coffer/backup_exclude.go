package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/coffer-backup/coffer/internal/agent"
)

// excludeFlags are backup's flags that choose what is backed up: the
// excludes and the lists of paths (docs/operations.md, "Choosing what to
// back up").
type excludeFlags struct {
	exclude, iexclude, excludeFile, iexcludeFile []string
	ifPresent                                    []string
	caches, oneFS                                bool
	largerThan                                   string
	filesFrom, filesVerbatim, filesRaw           []string
}

func (x *excludeFlags) register(f *pflag.FlagSet) {
	f.StringArrayVarP(&x.exclude, "exclude", "e", nil, "leave out what matches this pattern (gitignore-style, see above; repeatable)")
	f.StringArrayVar(&x.iexclude, "iexclude", nil, "like --exclude, ignoring case")
	f.StringArrayVar(&x.excludeFile, "exclude-file", nil, "read --exclude patterns from FILE, one a line (# comments; repeatable)")
	f.StringArrayVar(&x.iexcludeFile, "iexclude-file", nil, "like --exclude-file, ignoring case")
	f.BoolVar(&x.caches, "exclude-caches", false, "leave out the contents of directories with a valid CACHEDIR.TAG (the tag is kept)")
	f.StringArrayVar(&x.ifPresent, "exclude-if-present", nil, "leave out the contents of directories holding file NAME[:HEADER] (the file is kept; repeatable)")
	f.StringVar(&x.largerThan, "exclude-larger-than", "", "leave out files larger than SIZE (bytes, or 500K, 10M, 1G, 2T: units of 1024)")
	f.BoolVarP(&x.oneFS, "one-file-system", "x", false, "stay on the file systems of the given paths: mount points are saved empty")
	f.StringArrayVar(&x.filesFrom, "files-from", nil, "back up the paths listed in FILE, one a line (# comments, globs expanded; - for stdin; repeatable)")
	f.StringArrayVar(&x.filesVerbatim, "files-from-verbatim", nil, "like --files-from, each line exactly a path (no comments, no globs)")
	f.StringArrayVar(&x.filesRaw, "files-from-raw", nil, "like --files-from-verbatim, paths ended by NUL bytes (find -print0)")
}

// listsPaths reports whether a --files-from flag gives paths.
func (x *excludeFlags) listsPaths() bool {
	return len(x.filesFrom)+len(x.filesVerbatim)+len(x.filesRaw) > 0
}

// rules reads the pattern files and returns what the agent needs.
func (x *excludeFlags) rules(a *app) (agent.ExcludeRules, error) {
	r := agent.ExcludeRules{IfPresent: x.ifPresent, Caches: x.caches, OneFileSystem: x.oneFS}
	for _, p := range x.exclude {
		r.Patterns = append(r.Patterns, agent.ExcludePattern{Pattern: p, Source: "--exclude"})
	}
	for _, p := range x.iexclude {
		r.Patterns = append(r.Patterns, agent.ExcludePattern{Pattern: p, IgnoreCase: true, Source: "--iexclude"})
	}
	for _, f := range []struct {
		flag  string
		files []string
		fold  bool
	}{{"--exclude-file", x.excludeFile, false}, {"--iexclude-file", x.iexcludeFile, true}} {
		for _, name := range f.files {
			pats, err := readPatternFile(a, f.flag, name, f.fold)
			if err != nil {
				return r, err
			}
			r.Patterns = append(r.Patterns, pats...)
		}
	}
	if x.largerThan != "" {
		n, err := parseSize(x.largerThan)
		if err != nil {
			return r, fmt.Errorf("--exclude-larger-than: %w", err)
		}
		if n == 0 {
			return r, errors.New("--exclude-larger-than 0 would leave out every file with data: give a size above 0")
		}
		r.LargerThan = n
	}
	return r, nil
}

// readPatternFile reads an exclude file: one pattern a line; blank lines
// and lines starting with # are skipped; leading and trailing blanks are
// dropped (a trailing one escaped with \ is kept); $VAR and ${VAR} are
// expanded as restic does, $$ is a $, and a variable that is not set is an
// error rather than a pattern that silently matches something else.
func readPatternFile(a *app, flag, name string, fold bool) ([]agent.ExcludePattern, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	var out []agent.ExcludePattern
	for i, line := range strings.Split(string(data), "\n") {
		src := fmt.Sprintf("%s %s line %d", flag, name, i+1)
		line = trimPatternLine(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var unset []string
		line = os.Expand(line, func(v string) string {
			if v == "$" {
				return "$"
			}
			val := a.getenv(v)
			if val == "" {
				unset = append(unset, "$"+v)
			}
			return val
		})
		if len(unset) > 0 {
			return nil, fmt.Errorf("%s: %s is not set (write $$ for a $ in a name)", src, strings.Join(unset, ", "))
		}
		out = append(out, agent.ExcludePattern{Pattern: line, IgnoreCase: fold, Source: src})
	}
	return out, nil
}

// trimPatternLine drops a line's leading blanks and its trailing ones,
// except one escaped by a backslash.
func trimPatternLine(line string) string {
	line = strings.TrimLeft(strings.TrimSuffix(line, "\r"), " \t")
	t := strings.TrimRight(line, " \t")
	if len(t) < len(line) {
		bs := len(t) - len(strings.TrimRight(t, `\`))
		if bs%2 == 1 { // "foo\ ": the blank is part of the name
			t = line[:len(t)+1]
		}
	}
	return t
}

// listedPaths reads the --files-from, --files-from-verbatim and
// --files-from-raw lists. "-" is standard input (read once).
func (x *excludeFlags) listedPaths(a *app) ([]string, error) {
	var stdin []byte
	stdinRead := false
	read := func(flag, name string) ([]byte, error) {
		if name == "-" {
			if !stdinRead {
				b, err := io.ReadAll(a.stdin)
				if err != nil {
					return nil, fmt.Errorf("%s -: %w", flag, err)
				}
				stdin, stdinRead = b, true
			}
			return stdin, nil
		}
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", flag, err)
		}
		return b, nil
	}
	var out []string
	for _, name := range x.filesFrom {
		b, err := read("--files-from", name)
		if err != nil {
			return nil, err
		}
		b = bytes.TrimPrefix(b, []byte("\ufeff"))
		for _, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			out = append(out, expandGlob(line)...)
		}
	}
	for _, name := range x.filesVerbatim {
		b, err := read("--files-from-verbatim", name)
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line != "" {
				out = append(out, line)
			}
		}
	}
	for _, name := range x.filesRaw {
		b, err := read("--files-from-raw", name)
		if err != nil {
			return nil, err
		}
		for _, p := range strings.Split(string(b), "\x00") {
			if p != "" {
				out = append(out, p)
			}
		}
	}
	return out, nil
}

// expandGlob expands a --files-from line like restic does: a glob gives
// the paths it matches, and a line that matches nothing (or is no glob) is
// kept as it is, so a missing path is reported as missing.
func expandGlob(line string) []string {
	if !strings.ContainsAny(line, `*?[\`) {
		return []string{line}
	}
	m, err := filepath.Glob(line)
	if err != nil || len(m) == 0 {
		return []string{line}
	}
	return m
}

// parseSize reads a size: bytes, or a number with K, M, G or T (KiB, MiB,
// GiB, TiB; any case), units of 1024 as in restic.
func parseSize(s string) (uint64, error) {
	bad := fmt.Errorf("%q is not a size: give bytes, or a number with K, M, G or T (units of 1024), like 500K or 10M", s)
	num := strings.TrimRight(s, "kKmMgGtTiIbB")
	unit := strings.ToLower(s[len(num):])
	shift := 0
	switch unit {
	case "", "b":
	case "k", "kib":
		shift = 10
	case "m", "mib":
		shift = 20
	case "g", "gib":
		shift = 30
	case "t", "tib":
		shift = 40
	default:
		return 0, bad
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, fmt.Errorf("%q is too large", s)
		}
		return 0, bad
	}
	if n > math.MaxUint64>>shift {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n << shift, nil
}
