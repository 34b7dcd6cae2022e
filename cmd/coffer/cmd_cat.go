package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/format"
)

// catSnapshotJSON is coffer cat snapshot: the snapshot's decoded record.
type catSnapshotJSON struct {
	ID         string        `json:"id"`
	Time       time.Time     `json:"time"`
	Host       string        `json:"host"`
	Paths      []string      `json:"paths"`
	Tags       []string      `json:"tags"`
	Tree       string        `json:"tree"`
	Parent     string        `json:"parent,omitempty"`
	Files      uint64        `json:"files"`
	Dirs       uint64        `json:"dirs"`
	Bytes      uint64        `json:"bytes"`
	BytesAdded uint64        `json:"bytes_added"`
	Duration   time.Duration `json:"duration_ns"`
	Domain     string        `json:"domain,omitempty"`
}

// catNodeJSON is one node of coffer cat tree, every field the format has.
type catNodeJSON struct {
	Name string `json:"name"`
	// NameBytes holds the exact name (base64) when it is not UTF-8.
	NameBytes []byte     `json:"name_bytes,omitempty"`
	Type      string     `json:"type"`
	Mode      string     `json:"mode"`
	Perm      uint32     `json:"perm"`
	UID       uint64     `json:"uid"`
	GID       uint64     `json:"gid"`
	Size      uint64     `json:"size"`
	MTime     time.Time  `json:"mtime"`
	CTime     time.Time  `json:"ctime"`
	Inode     uint64     `json:"inode"`
	Device    uint64     `json:"device"`
	NLink     uint64     `json:"nlink"`
	Xattrs    []catXattr `json:"xattrs,omitempty"`
	Content   []string   `json:"content,omitempty"`
	Subtree   string     `json:"subtree,omitempty"`
	Target    string     `json:"target,omitempty"`
	RDev      uint64     `json:"rdev,omitempty"`
}

type catXattr struct {
	Name  string `json:"name"`
	Value []byte `json:"value"`
}

type catTreeJSON struct {
	Snapshot string        `json:"snapshot"`
	Path     string        `json:"path"`
	ID       string        `json:"id"`
	Nodes    []catNodeJSON `json:"nodes"`
}

// configSource is the local vault's config and keyring, described
// without key material; the remote one asks the server.
type configSource interface {
	catConfig(ctx context.Context) (format.Config, error)
	catKeyring(ctx context.Context) (format.KeyringInfo, error)
}

func (o *openedVault) catConfig(context.Context) (format.Config, error) { return o.Config(), nil }
func (o *openedVault) catKeyring(context.Context) (format.KeyringInfo, error) {
	return o.KeyringInfo(), nil
}
func (r *remoteVault) catConfig(ctx context.Context) (format.Config, error) {
	return r.Vault.Config(ctx)
}
func (r *remoteVault) catKeyring(ctx context.Context) (format.KeyringInfo, error) {
	return r.Vault.KeyringInfo(ctx)
}

func catNode(n *format.Node) catNodeJSON {
	j := catNodeJSON{Name: string(n.Name), Type: n.Kind.String(), Mode: modeString(n), Perm: n.Perm, UID: n.UID, GID: n.GID,
		Size: n.Size, MTime: time.Unix(0, n.MTime).UTC(), CTime: time.Unix(0, n.CTime).UTC(), Inode: n.Inode,
		Device: n.Device, NLink: n.NLink, Target: string(n.Target), RDev: n.RDev}
	if !utf8.Valid(n.Name) {
		j.NameBytes = n.Name
	}
	for _, x := range n.Xattrs {
		j.Xattrs = append(j.Xattrs, catXattr{Name: string(x.Name), Value: x.Value})
	}
	for _, id := range n.Content {
		j.Content = append(j.Content, id.String())
	}
	if n.Kind == format.KindDir {
		j.Subtree = n.Subtree.String()
	}
	return j
}

func newCatCmd(a *app) *cobra.Command {
	var sf selectFlags
	cmd := &cobra.Command{
		Use:   "cat config|keyring|snapshot SNAPSHOT|tree SNAPSHOT[:PATH]",
		Short: "Print a decoded, decrypted vault object as JSON, for debugging",
		Long: `Print one object of the vault, decrypted and decoded, as JSON:

  config                 the vault's config: format, ID, creation time, chunker
                         parameters, pack size
  keyring                the current keyring generation: the key encryption key
                         that wraps it, the DEK versions it holds and which is
                         current. Never key material: no root secret and no DEK,
                         wrapped or not, is printed
  snapshot SNAPSHOT      a snapshot's record (an ID, a unique prefix or "latest")
  tree SNAPSHOT[:PATH]   the directory PATH (default /) of a snapshot: each
                         entry with every field stored, chunk IDs included

On a local vault, whoever holds its key file may cat anything. Through a vault
server, config and keyring need key.read (owner, key-officer); snapshot and tree
need vault.read (backup-reader and above), as ls does: they show what ls shows,
with the IDs. A key-officer lists nothing, so may not cat snapshots or trees.`,
		Example: `  coffer cat config
  coffer cat keyring
  coffer cat snapshot latest
  coffer cat tree 1a2b3c4d:/home/ann`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind := args[0]
			switch kind {
			case "config", "keyring":
				if len(args) != 1 {
					return fmt.Errorf("coffer cat %s takes no ID", kind)
				}
			case "snapshot", "tree":
				if len(args) != 2 {
					return fmt.Errorf("coffer cat %s needs a SNAPSHOT (an ID, a unique prefix, or latest)", kind)
				}
			default:
				return fmt.Errorf("cannot cat %s: give config, keyring, snapshot or tree", quoteArg(kind))
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
			enc := json.NewEncoder(a.jsonStdout)
			enc.SetIndent("", "  ")
			cs, ok := v.(configSource)
			if !ok {
				return errors.New("this vault cannot describe its objects")
			}
			switch kind {
			case "config":
				c, err := cs.catConfig(ctx)
				if err != nil {
					return catErr(kind, err)
				}
				return enc.Encode(c)
			case "keyring":
				k, err := cs.catKeyring(ctx)
				if err != nil {
					return catErr(kind, err)
				}
				return enc.Encode(k)
			}
			ref, p, _ := strings.Cut(args[1], ":")
			if kind == "snapshot" && p != "" {
				return errors.New("coffer cat snapshot takes a SNAPSHOT, no :PATH")
			}
			s, err := a.findSnapshot(ctx, v, ref, sel)
			if err != nil {
				return err
			}
			if kind == "snapshot" {
				j := catSnapshotJSON{ID: s.ID.String(), Time: s.Time.UTC(), Host: s.Host, Paths: s.Paths, Tags: s.Tags,
					Tree: s.Tree.String(), Files: s.Files, Dirs: s.Dirs, Bytes: s.Bytes, BytesAdded: s.BytesAdded,
					Duration: s.Duration, Domain: s.Domain}
				if !s.Parent.IsZero() {
					j.Parent = s.Parent.String()
				}
				if j.Tags == nil {
					j.Tags = []string{}
				}
				return enc.Encode(j)
			}
			repo, err := v.ForSnapshot(ctx, s)
			if err != nil {
				return err
			}
			top := path.Clean("/" + p)
			id := s.Tree
			if top != "/" {
				var found *format.Node
				err := agent.Walk(ctx, repo, s.Tree, top, entryBound(s, 0), func(q string, n *format.Node) error {
					found = n
					return fs.SkipDir // the directory itself, not what lies below
				})
				if err != nil {
					return err
				}
				if found == nil || found.Kind != format.KindDir {
					return fmt.Errorf("%s is not a directory in snapshot %s: cat tree shows directories", safeText(top), s.ID.Short())
				}
				id = found.Subtree
			}
			t, err := repo.LoadTree(ctx, id)
			if err != nil {
				return err
			}
			out := catTreeJSON{Snapshot: s.ID.String(), Path: top, ID: id.String(), Nodes: make([]catNodeJSON, 0, len(t.Nodes))}
			for i := range t.Nodes {
				out.Nodes = append(out.Nodes, catNode(&t.Nodes[i]))
			}
			return enc.Encode(out)
		},
	}
	sf.register(cmd, true)
	return cmd
}

// catErr says what a refused cat config or keyring needs.
func catErr(kind string, err error) error {
	if errors.Is(err, api.ErrForbidden) {
		return fmt.Errorf("cat %s: %w (the vault's key metadata needs key.read: an owner's or a key-officer's token)", kind, err)
	}
	return fmt.Errorf("cat %s: %w", kind, err)
}

var (
	_ configSource = (*openedVault)(nil)
	_ configSource = (*remoteVault)(nil)
)
