package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/coffer-backup/coffer/internal/agent"
)

// What restore says about data lost to damage in the vault: each damaged
// file with its lost byte ranges, each lost directory, and a summary.

// maxRangesShown bounds the ranges listed per file in human output
// (--json lists them all).
const maxRangesShown = 8

// damageJSON is a damaged file in restore --json.
type damageJSON struct {
	Path      string      `json:"path"`
	Size      uint64      `json:"size"`
	LostBytes uint64      `json:"lost_bytes"`
	Lost      []rangeJSON `json:"lost"`
	Links     []string    `json:"links,omitempty"`
	Deleted   bool        `json:"deleted"`
}

type rangeJSON struct {
	Offset uint64 `json:"offset"`
	End    uint64 `json:"end"`
	Error  string `json:"error"`
}

type lostDirJSON struct {
	Path  string `json:"path"`
	Error string `json:"error"`
}

// damageReport is restore --json's account of damage.
func damageReport(res *agent.RestoreResult) (files []damageJSON, dirs []lostDirJSON, lost uint64) {
	files, dirs = []damageJSON{}, []lostDirJSON{}
	for _, d := range res.Damaged {
		j := damageJSON{Path: d.Path, Size: d.Size, LostBytes: d.LostBytes(), Links: d.Links, Deleted: d.Deleted, Lost: []rangeJSON{}}
		for _, r := range d.Lost {
			j.Lost = append(j.Lost, rangeJSON{r.Offset, r.End, fmt.Sprint(r.Err)})
		}
		files = append(files, j)
		lost += j.LostBytes
	}
	for _, d := range res.LostDirs {
		dirs = append(dirs, lostDirJSON{d.Path, fmt.Sprint(d.Err)})
	}
	return files, dirs, lost
}

// printDamage lists damaged files and lost directories on w, one line
// each (names and errors escaped: they come from the snapshot).
func printDamage(w io.Writer, res *agent.RestoreResult) {
	for _, d := range res.Damaged {
		what := "damaged"
		if d.Deleted {
			what = "damaged, removed"
		}
		line := fmt.Sprintf("%s: %s: %s of %s lost, bytes %s", what, d.Path, humanBytes(d.LostBytes()), humanBytes(d.Size), lostRanges(d))
		if len(d.Links) > 0 {
			line += "; the same file (hard links): " + strings.Join(d.Links, ", ")
		}
		fmt.Fprintln(w, safeText(line))
	}
	for _, d := range res.LostDirs {
		fmt.Fprintln(w, safeText(fmt.Sprintf("lost: %s: its listing cannot be read (%v); nothing below it was restored", d.Path, d.Err)))
	}
}

// lostRanges lists d's lost byte ranges with their causes, the first
// maxRangesShown of them.
func lostRanges(d agent.DamagedFile) string {
	var rs []string
	for i, r := range d.Lost {
		if i == maxRangesShown {
			rs = append(rs, fmt.Sprintf("and %s more", plural(len(d.Lost)-i, "range", "ranges")))
			break
		}
		rs = append(rs, fmt.Sprintf("%d–%d (%v)", r.Offset, r.End, r.Err))
	}
	return strings.Join(rs, ", ")
}

// damageSummary says what damage cost ("" for none): "3 files damaged,
// 1.2 MiB lost, and 1 directory lost".
func damageSummary(res *agent.RestoreResult, deleted bool) string {
	var parts []string
	if n := len(res.Damaged); n > 0 {
		var lost uint64
		for _, d := range res.Damaged {
			lost += d.LostBytes()
		}
		s := plural(n, "file", "files") + " damaged, " + humanBytes(lost) + " lost"
		if deleted {
			s += " (" + pick(n, "it was", "they were") + " removed: --delete-damaged)"
		} else {
			s += " (written with zeros where data was lost, mode 0600)"
		}
		parts = append(parts, s)
	}
	if n := len(res.LostDirs); n > 0 {
		parts = append(parts, plural(n, "directory", "directories")+" lost")
	}
	return strings.Join(parts, ", and ")
}
