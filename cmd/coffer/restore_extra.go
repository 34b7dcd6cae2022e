package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// restoreExtra are restore's --exclude, --iexclude, --exclude-file,
// --iexclude-file, --dry-run and --verify.
type restoreExtra struct {
	exclude, iexclude, excludeFile, iexcludeFile []string
	dryRun, verify                               bool
}

func (x *restoreExtra) register(f *pflag.FlagSet) {
	f.StringArrayVarP(&x.exclude, "exclude", "e", nil, "leave out what matches this pattern, by its path in the snapshot (gitignore-style, as for backup; repeatable)")
	f.StringArrayVar(&x.iexclude, "iexclude", nil, "like --exclude, ignoring case")
	f.StringArrayVar(&x.excludeFile, "exclude-file", nil, "read --exclude patterns from FILE, one a line (repeatable)")
	f.StringArrayVar(&x.iexcludeFile, "iexclude-file", nil, "like --exclude-file, ignoring case")
	f.BoolVar(&x.dryRun, "dry-run", false, "list what would be restored and count it; write nothing")
	f.BoolVar(&x.verify, "verify", false, "read every restored file back and check it against the snapshot's chunks (exit 3 on a difference); with --dry-run, read and authenticate every chunk it would restore, writing nothing (exit 3 on damage)")
}

// apply checks the flags and sets them on opt.
func (x *restoreExtra) apply(a *app, opt *agent.RestoreOptions) error {
	var r agent.ExcludeRules
	for _, p := range x.exclude {
		r.Patterns = append(r.Patterns, agent.ExcludePattern{Pattern: p, Source: "--exclude"})
	}
	for _, p := range x.iexclude {
		r.Patterns = append(r.Patterns, agent.ExcludePattern{Pattern: p, IgnoreCase: true, Source: "--iexclude"})
	}
	for _, ff := range []struct {
		flag  string
		files []string
		fold  bool
	}{{"--exclude-file", x.excludeFile, false}, {"--iexclude-file", x.iexcludeFile, true}} {
		for _, name := range ff.files {
			pats, err := readPatternFile(a, ff.flag, name, ff.fold)
			if err != nil {
				return err
			}
			r.Patterns = append(r.Patterns, pats...)
		}
	}
	if err := r.Check(); err != nil {
		return err
	}
	opt.Exclude, opt.DryRun, opt.Verify = r, x.dryRun, x.verify
	return nil
}

// dryRunEntry is one entry a dry run would restore.
type dryRunEntry struct {
	Path string `json:"path"`
	Type string `json:"type"`
	Size uint64 `json:"size,omitempty"`
}

func kindName(k format.NodeKind) string {
	switch k {
	case format.KindDir:
		return "dir"
	case format.KindFile:
		return "file"
	case format.KindSymlink:
		return "symlink"
	}
	return "special"
}

// printDryRun prints what a dry run found.
func printDryRun(a *app, s vault.SnapshotRecord, target string, res *agent.RestoreResult, entries []dryRunEntry, jsonOut, verify bool) error {
	if jsonOut {
		enc := json.NewEncoder(a.jsonStdout)
		enc.SetIndent("", "  ")
		lost := []string{}
		for _, d := range res.LostDirs {
			lost = append(lost, d.Path)
		}
		if entries == nil {
			entries = []dryRunEntry{}
		}
		out := map[string]any{"dry_run": true, "snapshot_id": s.ID.String(), "host": s.Host, "target": target,
			"files": res.Files, "dirs": res.Dirs, "bytes": res.Bytes, "entries": entries, "lost_dirs": lost}
		if verify {
			damaged, _, lostBytes := damageReport(res)
			out["verified"], out["damaged"], out["lost_bytes"] = res.Verified, damaged, lostBytes
		}
		if err := enc.Encode(out); err != nil {
			return err
		}
		return dryRunVerdict(res, verify)
	}
	for _, e := range entries {
		suffix := ""
		if e.Type == "dir" {
			suffix = "/"
		}
		fmt.Fprintf(a.stdout, "would restore %s%s\n", safeText(e.Path), suffix)
	}
	for _, d := range res.LostDirs {
		fmt.Fprintf(a.stderr, "lost: %s (its listing cannot be read: nothing below it would be restored)\n", safeText(d.Path))
	}
	if verify {
		for _, d := range res.Damaged {
			fmt.Fprintln(a.stderr, safeText(fmt.Sprintf("damaged: %s: %s of %s would be lost, bytes %s", d.Path, humanBytes(d.LostBytes()), humanBytes(d.Size), lostRanges(d))))
		}
	}
	fmt.Fprintf(a.stdout, "dry run: would restore snapshot %s (host %q) to %s: %s, %s, %s; nothing was written\n",
		s.ID.Short(), safeText(s.Host), target, plural(int(res.Files), "file", "files"), plural(int(res.Dirs), "dir", "dirs"), humanBytes(res.Bytes))
	if verify {
		fmt.Fprintf(a.stdout, "verified %s: %s\n", plural(int(res.Verified), "file", "files"),
			map[bool]string{true: "every chunk read and authenticated", false: plural(len(res.Damaged), "file has", "files have") + " damaged chunks"}[len(res.Damaged) == 0])
	}
	return dryRunVerdict(res, verify)
}

// dryRunVerdict is a dry run's exit: 3 when it would lose data (damaged
// chunks found with --verify, or directories whose listing is lost).
func dryRunVerdict(res *agent.RestoreResult, verify bool) error {
	var why []string
	if verify && len(res.Damaged) > 0 {
		why = append(why, plural(len(res.Damaged), "file has", "files have")+" damaged chunks")
	}
	if len(why) > 0 {
		return &partialError{"dry run: " + strings.Join(why, ", and ") + " (listed above)"}
	}
	return nil
}

// printVerify prints what --verify found; the reason for exit 3, or "".
func printVerify(a *app, res *agent.RestoreResult, jsonOut bool) string {
	if !jsonOut {
		for _, m := range res.Mismatched {
			fmt.Fprintf(a.stderr, "mismatch: %s\n", safeText(m.String()))
		}
		fmt.Fprintf(a.stdout, "verified %s: %s\n", plural(int(res.Verified), "file", "files"), map[bool]string{true: "each matches the snapshot", false: plural(len(res.Mismatched), "file differs", "files differ") + " from the snapshot"}[len(res.Mismatched) == 0])
	}
	if len(res.Mismatched) == 0 {
		return ""
	}
	return plural(len(res.Mismatched), "restored file does", "restored files do") + " not match the snapshot when read back"
}

// verifyJSON is --verify's part of restore --json.
func verifyJSON(res *agent.RestoreResult) []map[string]any {
	out := []map[string]any{}
	for _, m := range res.Mismatched {
		out = append(out, map[string]any{"path": m.Path, "offset": m.Offset, "error": strings.TrimSpace(m.Why)})
	}
	return out
}
