package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/format"
)

// findMatcher decides whether an entry matches one of the patterns of
// coffer find, as restic's find does: a pattern without '/' is matched
// against the entry's name; one with '/' against its path, the whole
// path when it starts with '/', else its last components.
type findMatcher struct {
	patterns   []string
	ignoreCase bool
}

func newFindMatcher(patterns []string, ignoreCase bool) (*findMatcher, error) {
	m := &findMatcher{ignoreCase: ignoreCase}
	for _, p := range patterns {
		if p == "" {
			return nil, errors.New("an empty pattern matches nothing: give a name or glob such as '*.pdf'")
		}
		if ignoreCase {
			p = strings.ToLower(p)
		}
		if len(p) > 1 {
			p = strings.TrimSuffix(p, "/") // "docs/" names the directory docs
		}
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("pattern %s: %w", quoteArg(p), err)
		}
		m.patterns = append(m.patterns, p)
	}
	return m, nil
}

// match reports whether the entry at p (absolute, in the snapshot)
// matches a pattern.
func (m *findMatcher) match(p string) bool {
	if m.ignoreCase {
		p = strings.ToLower(p)
	}
	name := path.Base(p)
	for _, pat := range m.patterns {
		var subject string
		switch {
		case !strings.Contains(pat, "/"):
			subject = name
		case strings.HasPrefix(pat, "/"):
			subject = p
		default:
			// The last as many components of p as pat has.
			n := strings.Count(pat, "/") + 1
			i := len(p)
			for ; n > 0 && i > 0; n-- {
				i = strings.LastIndexByte(p[:i], '/')
			}
			if n > 0 || i < 0 {
				continue // p is shallower than the pattern
			}
			subject = p[i+1:]
		}
		if ok, _ := path.Match(pat, subject); ok {
			return true
		}
	}
	return false
}

// findMatchJSON is one line of coffer find --json.
type findMatchJSON struct {
	SnapshotID   string    `json:"snapshot_id"`
	SnapshotTime time.Time `json:"snapshot_time"`
	Host         string    `json:"host"`
	nodeJSON
}

// parseFindTime reads --oldest and --newest: a date, a date and time
// (local time), or RFC 3339.
func parseFindTime(flag, s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("--%s %s: give a date such as 2024-05-01, \"2024-05-01 13:00\" or 2024-05-01T13:00:00Z", flag, quoteArg(s))
}

func newFindCmd(a *app) *cobra.Command {
	var jsonOut, long, ignoreCase bool
	var snapRefs []string
	var oldest, newest string
	var sf selectFlags
	var maxEntries uint64
	cmd := &cobra.Command{
		Use:   "find PATTERN...",
		Short: "Find which snapshots hold files matching a pattern",
		Long: `Find the files, directories and links whose name matches PATTERN, in every
snapshot (oldest first) or in those --snapshot, --host, --path and --tag select.

A PATTERN is a glob (* ? [a-z], as in the shell; * does not cross '/'). Without
'/' it is matched against each entry's name; with '/' against its path: the
whole path when it starts with '/' (/home/*/notes.txt), else its last
components (Documents/*.pdf). -i ignores case. Quote patterns so that the shell
does not expand them. Each snapshot is searched and reported on its own, so a
file kept unchanged in ten snapshots is listed ten times.

--oldest and --newest keep only entries modified at or after, at or before, a
time (as restic's find). Each line shows the entry's size, modification time and
path under its snapshot's ID, time and host; -l adds mode, owner and group.
With --json, prints one JSON object per match and line, with the snapshot's ID,
time and host.

Through a vault server, a backup-reader token is enough: find reads file names
and metadata, never contents. It visits no more entries of a snapshot than its
record counts (--max-entries), as ls does.`,
		Example: `  coffer find '*.pdf'
  coffer find -i 'report*.DOCX' --host web02
  coffer find /home/ann/Documents/taxes.ods --json
  coffer find 'notes.txt' --snapshot latest --snapshot 1a2b3c4d
  coffer find '*.conf' --path /etc --newest 2024-06-30`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := newFindMatcher(args, ignoreCase)
			if err != nil {
				return err
			}
			var after, before time.Time
			if oldest != "" {
				if after, err = parseFindTime("oldest", oldest); err != nil {
					return err
				}
			}
			if newest != "" {
				if before, err = parseFindTime("newest", newest); err != nil {
					return err
				}
			}
			sel, err := sf.selection()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			v, err := a.open(ctx, false)
			if err != nil {
				return err
			}
			defer v.Close()
			snaps, err := a.selectSnapshots(ctx, v, snapRefs, sel)
			if err != nil {
				return err
			}
			owners := newOwnerNames()
			enc := json.NewEncoder(a.jsonStdout)
			matches := 0
			for _, s := range snaps {
				repo, err := v.ForSnapshot(ctx, s)
				if err != nil {
					return err
				}
				header := false
				err = agent.WalkAhead(ctx, repo, s.Tree, "/", entryBound(s, maxEntries), func(p string, n *format.Node) error {
					if !m.match(p) {
						return nil
					}
					mt := time.Unix(0, n.MTime)
					if (!after.IsZero() && mt.Before(after)) || (!before.IsZero() && mt.After(before)) {
						return nil
					}
					matches++
					if jsonOut {
						j := findMatchJSON{SnapshotID: s.ID.String(), SnapshotTime: s.Time.UTC(), Host: s.Host,
							nodeJSON: nodeJSON{Path: p, Type: n.Kind.String(), Mode: modeString(n), Size: n.Size,
								MTime: mt.UTC(), UID: n.UID, GID: n.GID, Target: string(n.Target), Chunks: len(n.Content)}}
						if !utf8.ValidString(p) {
							j.PathBytes = []byte(p)
						}
						return enc.Encode(j)
					}
					if !header {
						header = true
						if _, err := fmt.Fprintf(a.stdout, "Found matching entries in snapshot %s from %s (host %s)\n",
							s.ID.Short(), tableTime(s.Time), safeText(s.Host)); err != nil {
							return err
						}
					}
					var err error
					if long {
						_, err = fmt.Fprintf(a.stdout, "%s %-8s %-8s %12d %s %s\n", lsMode(n), orNumber(owners.user(n.UID), n.UID),
							orNumber(owners.group(n.GID), n.GID), n.Size, tableTime(mt), safeText(p))
					} else {
						_, err = fmt.Fprintf(a.stdout, "%12d %s %s\n", n.Size, tableTime(mt), safeText(p))
					}
					return err
				})
				if err != nil {
					return fmt.Errorf("snapshot %s: %w", s.ID.Short(), err)
				}
				if header && !jsonOut {
					fmt.Fprintln(a.stdout)
				}
			}
			if !jsonOut {
				fmt.Fprintf(a.stderr, "%s in %s\n", plural(matches, "match", "matches"), plural(len(snaps), "snapshot", "snapshots"))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&jsonOut, "json", false, "print one JSON object per match and line")
	f.BoolVarP(&long, "long", "l", false, "also show mode, owner and group")
	f.BoolVarP(&ignoreCase, "ignore-case", "i", false, "ignore case in patterns")
	f.StringArrayVarP(&snapRefs, "snapshot", "s", nil, `search only this snapshot: an ID, a unique prefix, or "latest" (repeatable)`)
	f.StringVarP(&oldest, "oldest", "O", "", "only entries modified at or after this time (2024-05-01, \"2024-05-01 13:00\", RFC 3339)")
	f.StringVarP(&newest, "newest", "N", "", "only entries modified at or before this time")
	sf.register(cmd, true)
	maxEntriesFlag(cmd, &maxEntries)
	return cmd
}
