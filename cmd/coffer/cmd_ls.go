package main

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/format"
)

type nodeJSON struct {
	Path string `json:"path"`
	// PathBytes holds the exact name bytes (base64) when the path is not
	// valid UTF-8; Path then shows it with replacement characters.
	PathBytes []byte    `json:"path_bytes,omitempty"`
	Type      string    `json:"type"`
	Mode      string    `json:"mode"`
	Size      uint64    `json:"size"`
	MTime     time.Time `json:"mtime"`
	UID       uint64    `json:"uid"`
	GID       uint64    `json:"gid"`
	Target    string    `json:"target,omitempty"`
	Chunks    int       `json:"chunks,omitempty"`
}

func modeString(n *format.Node) string {
	m := fs.FileMode(n.Perm & 0o777)
	switch n.Kind {
	case format.KindDir:
		m |= fs.ModeDir
	case format.KindSymlink:
		m |= fs.ModeSymlink
	case format.KindFIFO:
		m |= fs.ModeNamedPipe
	case format.KindCharDev:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case format.KindBlockDev:
		m |= fs.ModeDevice
	case format.KindSocket:
		m |= fs.ModeSocket
	}
	if n.Perm&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if n.Perm&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if n.Perm&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m.String()
}

func newLsCmd(a *app) *cobra.Command {
	var jsonOut, long bool
	var host string
	var maxEntries uint64
	cmd := &cobra.Command{
		Use:   "ls SNAPSHOT [PATH]",
		Short: "List the files in a snapshot",
		Long: `List the files in a snapshot, below PATH if given. SNAPSHOT is a full ID, a
unique prefix of one, or "latest". With --json, prints one JSON object per line.
It visits no more entries than the snapshot's record counts, and stops with an
error at a snapshot whose trees expand to more.`,
		Example: "  coffer ls latest\n  coffer ls 1a2b3c4d /home/ann/Documents -l\n  coffer ls latest --json",
		Args:    cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			v, err := a.open(ctx, false)
			if err != nil {
				return err
			}
			defer v.Close()
			s, err := findSnapshot(ctx, v, args[0], host)
			if err != nil {
				return err
			}
			prefix := "/"
			if len(args) == 2 {
				prefix = args[1]
			}
			repo, err := v.ForSnapshot(ctx, s)
			if err != nil {
				return err
			}
			enc := json.NewEncoder(a.jsonStdout)
			return agent.Walk(ctx, repo, s.Tree, prefix, entryBound(s, maxEntries), func(p string, n *format.Node) error {
				if jsonOut {
					j := nodeJSON{Path: p, Type: n.Kind.String(), Mode: modeString(n), Size: n.Size,
						MTime: time.Unix(0, n.MTime).UTC(), UID: n.UID, GID: n.GID, Target: string(n.Target), Chunks: len(n.Content)}
					if !utf8.ValidString(p) {
						j.PathBytes = []byte(p)
					}
					return enc.Encode(j)
				}
				if long {
					extra := ""
					if n.Kind == format.KindSymlink {
						extra = " -> " + safeText(string(n.Target))
					}
					_, err := fmt.Fprintf(a.stdout, "%s %5d %5d %12d %s %s%s\n", modeString(n), n.UID, n.GID, n.Size,
						tableTime(time.Unix(0, n.MTime)), safeText(p), extra)
					return err
				}
				_, err := fmt.Fprintln(a.stdout, safeText(p))
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print one JSON object per line")
	latestHostFlag(cmd, &host)
	cmd.Flags().BoolVarP(&long, "long", "l", false, "show mode, owner, size and time")
	maxEntriesFlag(cmd, &maxEntries)
	return cmd
}
