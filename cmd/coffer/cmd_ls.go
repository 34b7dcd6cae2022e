package main

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os/user"
	"path"
	"strconv"
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
	// User and Group name UID and GID on the machine that lists the
	// snapshot (absent when it has no such user or group).
	User  string `json:"user,omitempty"`
	Group string `json:"group,omitempty"`
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

// lsMode is n's mode as ls -l shows it: -rw-r--r--, drwxr-xr-x,
// lrwxrwxrwx, -rwsr-xr-x, drwxrwxrwt.
func lsMode(n *format.Node) string {
	b := []byte("----------")
	switch n.Kind {
	case format.KindDir:
		b[0] = 'd'
	case format.KindSymlink:
		b[0] = 'l'
	case format.KindFIFO:
		b[0] = 'p'
	case format.KindCharDev:
		b[0] = 'c'
	case format.KindBlockDev:
		b[0] = 'b'
	case format.KindSocket:
		b[0] = 's'
	}
	const rwx = "rwxrwxrwx"
	for i := range 9 {
		if n.Perm&(1<<(8-i)) != 0 {
			b[1+i] = rwx[i]
		}
	}
	special := func(bit uint32, at int, set, noExec byte) {
		if n.Perm&bit == 0 {
			return
		}
		if b[at] == '-' {
			b[at] = noExec
		} else {
			b[at] = set
		}
	}
	special(0o4000, 3, 's', 'S')
	special(0o2000, 6, 's', 'S')
	special(0o1000, 9, 't', 'T')
	return string(b)
}

// maxOwnerLookups bounds the distinct IDs looked up in the user and group
// databases per listing: a snapshot (perhaps a hostile one) with a
// different owner on every file must not turn ls into a million lookups.
const maxOwnerLookups = 4096

// ownerNames names the UIDs and GIDs of a snapshot with this machine's
// users and groups, remembering each answer.
type ownerNames struct {
	users, groups map[uint64]string
	lookupUser    func(id string) (string, error)
	lookupGroup   func(id string) (string, error)
}

func newOwnerNames() *ownerNames {
	return &ownerNames{users: map[uint64]string{}, groups: map[uint64]string{},
		lookupUser: func(id string) (string, error) {
			u, err := user.LookupId(id)
			if err != nil {
				return "", err
			}
			return u.Username, nil
		},
		lookupGroup: func(id string) (string, error) {
			g, err := user.LookupGroupId(id)
			if err != nil {
				return "", err
			}
			return g.Name, nil
		},
	}
}

func (o *ownerNames) name(cache map[uint64]string, look func(string) (string, error), id uint64) string {
	if n, ok := cache[id]; ok {
		return n
	}
	if len(cache) >= maxOwnerLookups {
		return ""
	}
	n, err := look(strconv.FormatUint(id, 10))
	if err != nil {
		n = ""
	}
	cache[id] = n
	return n
}

// user is the name of uid on this machine, "" when it has none.
func (o *ownerNames) user(uid uint64) string { return o.name(o.users, o.lookupUser, uid) }

// group is the name of gid on this machine, "" when it has none.
func (o *ownerNames) group(gid uint64) string { return o.name(o.groups, o.lookupGroup, gid) }

// orNumber is name, or id when name is "".
func orNumber(name string, id uint64) string {
	if name == "" {
		return strconv.FormatUint(id, 10)
	}
	return safeText(name)
}

func newLsCmd(a *app) *cobra.Command {
	var jsonOut, long, noRecursive bool
	var sf selectFlags
	var maxEntries uint64
	cmd := &cobra.Command{
		Use:   "ls SNAPSHOT [PATH]",
		Short: "List the files in a snapshot",
		Long: `List the files in a snapshot: PATH (default /) and everything below it, or with
--no-recursive PATH and its direct entries only. SNAPSHOT is a full ID, a
unique prefix of one, or "latest": this host's newest snapshot ($COFFER_HOST or
this machine's host name; with an agent's token, the agent's). --host, --path
and --tag narrow which snapshot "latest" is, --any-host widens it to every host;
a snapshot named by ID is refused when filters given exclude it.

-l shows each entry's mode as ls does (-rw-r--r--), its owner and group, size,
modification time and, for a symlink, its target. Owners are the snapshot's
user and group IDs named by this machine's users and groups (the number when
it has none, or when the snapshot came from a machine whose names differ).
With --json, prints one JSON object per line, with uid, gid and those names.

It visits no more entries than the snapshot's record counts, and stops with an
error at a snapshot whose trees expand to more.`,
		Example: "  coffer ls latest\n  coffer ls latest /home/ann --no-recursive -l\n  coffer ls 1a2b3c4d /home/ann/Documents -l\n  coffer ls latest --host web02 --path /srv --json",
		Args:    cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
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
			s, err := a.findSnapshot(ctx, v, args[0], sel)
			if err != nil {
				return err
			}
			prefix := "/"
			if len(args) == 2 {
				prefix = args[1]
			}
			top := path.Clean("/" + prefix)
			repo, err := v.ForSnapshot(ctx, s)
			if err != nil {
				return err
			}
			owners := newOwnerNames()
			enc := json.NewEncoder(a.jsonStdout)
			walk := agent.WalkAhead // every directory below prefix is entered: load their trees ahead
			if noRecursive {
				walk = agent.Walk
			}
			return walk(ctx, repo, s.Tree, prefix, entryBound(s, maxEntries), func(p string, n *format.Node) error {
				var err error
				switch {
				case jsonOut:
					j := nodeJSON{Path: p, Type: n.Kind.String(), Mode: modeString(n), Size: n.Size,
						MTime: time.Unix(0, n.MTime).UTC(), UID: n.UID, GID: n.GID, Target: string(n.Target), Chunks: len(n.Content),
						User: owners.user(n.UID), Group: owners.group(n.GID)}
					if !utf8.ValidString(p) {
						j.PathBytes = []byte(p)
					}
					err = enc.Encode(j)
				case long:
					extra := ""
					if n.Kind == format.KindSymlink {
						extra = " -> " + safeText(string(n.Target))
					}
					_, err = fmt.Fprintf(a.stdout, "%s %-8s %-8s %12d %s %s%s\n", lsMode(n), orNumber(owners.user(n.UID), n.UID),
						orNumber(owners.group(n.GID), n.GID), n.Size, tableTime(time.Unix(0, n.MTime)), safeText(p), extra)
				default:
					_, err = fmt.Fprintln(a.stdout, safeText(p))
				}
				if err == nil && noRecursive && p != top && n.Kind == format.KindDir {
					return fs.SkipDir // listed, not entered
				}
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print one JSON object per line")
	sf.register(cmd, true)
	cmd.Flags().BoolVarP(&long, "long", "l", false, "show mode, owner, group, size and time")
	cmd.Flags().BoolVar(&noRecursive, "no-recursive", false, "list PATH and its direct entries, not what lies below them")
	maxEntriesFlag(cmd, &maxEntries)
	return cmd
}
