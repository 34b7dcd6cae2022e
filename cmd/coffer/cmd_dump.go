package main

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// dumpArchive writes a directory's entries as one archive format.
type dumpArchive interface {
	// add writes the header of entry name (relative, '/'-separated) of
	// node n; for a regular file it returns the writer its content goes
	// to, all of it before the next add.
	add(name string, n *format.Node) (content io.Writer, skipped bool, err error)
	close() error
}

// tarArchive writes a tar stream (PAX where a field needs it).
type tarArchive struct{ w *tar.Writer }

func (t *tarArchive) add(name string, n *format.Node) (io.Writer, bool, error) {
	h := &tar.Header{Name: name, Mode: int64(n.Perm & 0o7777), Uid: int(n.UID), Gid: int(n.GID),
		ModTime: time.Unix(0, n.MTime)}
	if n.UID > 1<<31-1 || n.GID > 1<<31-1 {
		h.Uid, h.Gid = 0, 0 // an owner no tar can carry: leave it to the extracting user
	}
	switch n.Kind {
	case format.KindDir:
		h.Typeflag, h.Name = tar.TypeDir, name+"/"
	case format.KindFile:
		h.Typeflag, h.Size = tar.TypeReg, int64(n.Size)
		if h.Size < 0 {
			return nil, false, fmt.Errorf("%s: size %d is out of range", name, n.Size)
		}
	case format.KindSymlink:
		h.Typeflag, h.Linkname = tar.TypeSymlink, string(n.Target)
	case format.KindFIFO:
		h.Typeflag = tar.TypeFifo
	case format.KindCharDev, format.KindBlockDev:
		h.Typeflag = tar.TypeChar
		if n.Kind == format.KindBlockDev {
			h.Typeflag = tar.TypeBlock
		}
		h.Devmajor, h.Devminor = int64(unix.Major(n.RDev)), int64(unix.Minor(n.RDev))
	default: // sockets: nothing an archive can hold
		return nil, true, nil
	}
	if err := t.w.WriteHeader(h); err != nil {
		return nil, false, fmt.Errorf("%s: %w", name, err)
	}
	if n.Kind == format.KindFile {
		return t.w, false, nil
	}
	return nil, false, nil
}

func (t *tarArchive) close() error { return t.w.Close() }

// zipArchive writes a zip stream: files deflated, symlinks stored with
// their target as content (as Info-ZIP does).
type zipArchive struct{ w *zip.Writer }

func (z *zipArchive) add(name string, n *format.Node) (io.Writer, bool, error) {
	h := &zip.FileHeader{Name: name, Modified: time.Unix(0, n.MTime), Method: zip.Deflate}
	mode := fs.FileMode(n.Perm & 0o777)
	switch n.Kind {
	case format.KindDir:
		h.Name, h.Method, mode = name+"/", zip.Store, mode|fs.ModeDir
	case format.KindFile:
		h.UncompressedSize64 = n.Size
	case format.KindSymlink:
		h.Method, mode = zip.Store, mode|fs.ModeSymlink
	default: // FIFOs, devices, sockets: zip has no such entries
		return nil, true, nil
	}
	h.SetMode(mode)
	w, err := z.w.CreateHeader(h)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", name, err)
	}
	switch n.Kind {
	case format.KindFile:
		return w, false, nil
	case format.KindSymlink:
		_, err = w.Write(n.Target)
	}
	return nil, false, err
}

func (z *zipArchive) close() error { return z.w.Close() }

// Dump batches: the entries queued before their chunks are fetched, at
// most dumpBatchEntries of them and dumpBatchChunks chunks (a file with
// more is fetched dumpBatchChunks at a time). Through a vault server a
// batch of chunks is one request, and it is streamed: memory is one
// chunk, whatever the batch.
const (
	dumpBatchEntries = 1024
	dumpBatchChunks  = 256
)

// dumpEntry is an entry waiting for its chunks.
type dumpEntry struct {
	rel, path string
	n         *format.Node
}

// dumper writes entries to an archive (or, with ar nil, one file's
// content to w) in order, fetching their chunks many per request through
// a BatchLoader (a vault server), one by one otherwise.
type dumper struct {
	ctx     context.Context
	repo    agent.RestoreRepo
	ar      dumpArchive
	w       io.Writer // the content of the one file dumped, when ar is nil
	buf     []byte
	queue   []dumpEntry
	chunks  int
	skipped func(p string, n *format.Node)

	// The entry being written.
	cur     int
	started bool
	out     io.Writer
	written uint64
}

// add queues entry rel (at path p) of node n, writing what is queued when
// the batch is full.
func (d *dumper) add(rel, p string, n *format.Node) error {
	// A copy of what the archive needs: a node's name, target and
	// extended attributes point into its tree's decoded bytes, which a
	// queued entry must not keep alive (a hostile snapshot's entries
	// could each come from another copy of a large tree).
	c := *n
	c.Name, c.Target, c.Xattrs = nil, bytes.Clone(n.Target), nil
	n = &c
	d.queue = append(d.queue, dumpEntry{rel, p, n})
	if n.Kind == format.KindFile {
		d.chunks += len(n.Content)
	}
	if len(d.queue) >= dumpBatchEntries || d.chunks >= dumpBatchChunks {
		return d.flush()
	}
	return nil
}

// flush writes every queued entry, fetching their chunks dumpBatchChunks
// at a time.
func (d *dumper) flush() error {
	d.cur, d.started = 0, false
	bl, batching := d.repo.(agent.BatchLoader)
	group := make([]vault.ID, 0, dumpBatchChunks)
	owner := make([]int, 0, dumpBatchChunks) // the queued entry each chunk belongs to
	for k, j := 0, 0; ; {
		// The next chunks, from entry k's chunk j on.
		group, owner = group[:0], owner[:0]
		for ; k < len(d.queue) && len(group) < dumpBatchChunks; k, j = k+1, 0 {
			if e := d.queue[k]; e.n.Kind == format.KindFile {
				n := min(len(e.n.Content)-j, dumpBatchChunks-len(group))
				for _, id := range e.n.Content[j : j+n] {
					group, owner = append(group, id), append(owner, k)
				}
				if j += n; j < len(e.n.Content) {
					break // the group is full inside entry k
				}
			}
		}
		if len(group) == 0 {
			break
		}
		got := 0 // chunks of the group written
		var werr error
		write := func(i int, data []byte) error {
			if werr = d.upTo(owner[i]); werr == nil {
				werr = d.content(data)
			}
			got = i + 1
			return werr
		}
		if batching && len(group) > 1 {
			err := bl.LoadBlobs(d.ctx, vault.DataBlob, group, write)
			if werr != nil {
				return werr // the archive's, or a chunk's size: it names its entry
			}
			if err == nil && got < len(group) {
				err = fmt.Errorf("data blob %s: %w: the answer left it out", group[got].Short(), vault.ErrTruncated)
			}
			if err != nil {
				return d.chunkErr(owner[min(got, len(group)-1)], err)
			}
		} else {
			for i, id := range group {
				b, err := d.repo.LoadBlob(d.ctx, vault.DataBlob, id, d.buf[:0])
				if err != nil {
					return d.chunkErr(owner[i], err)
				}
				d.buf = b
				if err := write(i, b); err != nil {
					return err
				}
			}
		}
	}
	if err := d.upTo(len(d.queue)); err != nil {
		return err
	}
	d.queue, d.chunks = d.queue[:0], 0
	return nil
}

// chunkErr names queued entry k, the one whose chunk could not be read.
func (d *dumper) chunkErr(k int, err error) error {
	return fmt.Errorf("%s: %w", safeText(d.queue[k].path), err)
}

// upTo finishes the entries before queued entry k and starts entry k.
func (d *dumper) upTo(k int) error {
	for d.cur < k || (d.cur == k && !d.started && k < len(d.queue)) {
		if !d.started {
			if err := d.start(); err != nil {
				return err
			}
			if d.cur == k {
				return nil
			}
		}
		if err := d.finish(); err != nil {
			return err
		}
	}
	return nil
}

func (d *dumper) start() error {
	e := d.queue[d.cur]
	d.started, d.written, d.out = true, 0, d.w
	if d.ar != nil {
		w, skip, err := d.ar.add(e.rel, e.n)
		if skip {
			d.skipped(e.path, e.n)
		}
		if err != nil {
			return err
		}
		d.out = w
	}
	return nil
}

// content writes a chunk of the current entry. The chunks must add up to
// the size the tree records, or the output is wrong.
func (d *dumper) content(b []byte) error {
	e := d.queue[d.cur]
	if uint64(len(b)) > e.n.Size-d.written {
		return fmt.Errorf("%s: its chunks hold more than the %d bytes its tree records: %w", safeText(e.path), e.n.Size, vault.ErrCorrupt)
	}
	if _, err := d.out.Write(b); err != nil {
		return err
	}
	d.written += uint64(len(b))
	return nil
}

func (d *dumper) finish() error {
	e := d.queue[d.cur]
	if e.n.Kind == format.KindFile && d.written != e.n.Size {
		return fmt.Errorf("%s: its chunks hold %d bytes, not the %d its tree records: %w", safeText(e.path), d.written, e.n.Size, vault.ErrCorrupt)
	}
	d.cur++
	d.started = false
	return nil
}

func newDumpCmd(a *app) *cobra.Command {
	var archive, target string
	var sf selectFlags
	var maxEntries uint64
	cmd := &cobra.Command{
		Use:   "dump SNAPSHOT PATH",
		Short: "Write a file, or a directory as an archive, from a snapshot to stdout",
		Long: `Write PATH of a snapshot to stdout: a file's content as it is, a directory
(or / for the whole snapshot) as a tar archive, or with --archive zip as a zip
archive. Entries are named relative to PATH's parent (dumping /home/ann/docs
gives docs/, docs/a.txt, …) with their modes, owners (tar), modification times
and symlinks; FIFOs and devices go into tar only, sockets into neither, and
each left out is listed on stderr (exit code 3). Hard links are written as
separate files, and extended attributes are left out.

dump streams: it holds one chunk in memory, not the file. It refuses to write
to a terminal (a file's bytes could be escape sequences that act on it):
redirect stdout, pipe it, or give --target FILE, which writes a new file and
refuses one that exists. SNAPSHOT is an ID, a unique prefix or "latest", as
for restore. Through a vault server it needs a token that may restore.`,
		Example: `  coffer dump latest /etc/hosts > hosts
  coffer dump latest /home/ann/docs > docs.tar
  coffer dump 1a2b3c4d /home/ann/docs --archive zip --target docs.zip
  coffer dump latest / | tar -tvf -`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			if archive != "tar" && archive != "zip" {
				return fmt.Errorf("--archive %s: give tar or zip", quoteArg(archive))
			}
			sel, err := sf.selection()
			if err != nil {
				return err
			}
			var out io.Writer = a.rawStdout
			if target == "" {
				if f, ok := a.rawStdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
					return errors.New("stdout is a terminal: redirect it (> FILE), pipe it (| tar -tvf -), or give --target FILE")
				}
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
			repo, err := v.ForSnapshot(ctx, s)
			if err != nil {
				return err
			}
			if target != "" {
				// A new file only: a dump never replaces what is there.
				f, ferr := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
				if ferr != nil {
					return fmt.Errorf("--target: %w", ferr)
				}
				defer func() {
					if cerr := f.Close(); err == nil && cerr != nil {
						err = cerr
					}
					var partial *partialError
					if err != nil && !errors.As(err, &partial) {
						os.Remove(target) // no half-written archive left behind as if whole
					}
				}()
				out = f
			}
			bw := bufio.NewWriterSize(out, 256<<10)
			top := path.Clean("/" + args[1])
			base := path.Dir(top)
			var ar dumpArchive
			var skipped []string
			found := top == "/"
			d := &dumper{ctx: ctx, repo: repo, buf: make([]byte, 0, 1<<20), skipped: func(p string, n *format.Node) {
				skipped = append(skipped, p)
				fmt.Fprintf(a.stderr, "left out %s: a %s %s archive cannot hold\n", safeText(p), n.Kind, archive)
			}}
			// The record's size bounds what the files add up to, as its
			// counts bound the entries: a hostile tree that names one chunk
			// a million times in a file stops here, not after terabytes.
			var total uint64
			budget := func(p string, n *format.Node) error {
				if n.Kind != format.KindFile || maxEntries > 0 {
					return nil
				}
				if total += n.Size; total < n.Size || total > s.Bytes {
					return fmt.Errorf("%s: the snapshot's files add up to more than the %d bytes its record says: its trees were altered or are hostile; nothing more is written (with --max-entries, a trusted snapshot is dumped without this bound): %w",
						safeText(p), s.Bytes, agent.ErrTooManyEntries)
				}
				return nil
			}
			visit := func(p string, n *format.Node) error {
				if err := budget(p, n); err != nil {
					return err
				}
				if !found { // the first node: PATH itself
					found = true
					if n.Kind != format.KindDir {
						if n.Kind != format.KindFile {
							return fmt.Errorf("%s is a %s, not a file or directory: nothing to dump", safeText(p), n.Kind)
						}
						d.w = bw
						if err := d.add("", p, n); err != nil {
							return err
						}
						return d.flush()
					}
					ar = newArchive(archive, bw)
					d.ar = ar
				}
				rel := strings.TrimPrefix(strings.TrimPrefix(p, base), "/")
				if rel == "" || strings.HasPrefix(rel, "../") || strings.Contains(rel, "/../") || strings.HasSuffix(rel, "/..") {
					return fmt.Errorf("%s: not a name an archive may hold: %w", safeText(p), vault.ErrCorrupt)
				}
				return d.add(rel, p, n)
			}
			if top == "/" {
				ar = newArchive(archive, bw)
				d.ar = ar
			}
			err = agent.WalkAhead(ctx, repo, s.Tree, top, entryBound(s, maxEntries), visit)
			if err == nil && !found {
				err = fmt.Errorf("%s: %w in the snapshot", safeText(top), vault.ErrNotFound)
			}
			if err == nil && ar != nil {
				if err = d.flush(); err == nil {
					err = ar.close()
				}
			}
			if err == nil {
				err = bw.Flush()
			}
			if f, ok := out.(*os.File); ok && err == nil && target != "" {
				err = f.Sync()
			}
			if err != nil {
				return err
			}
			if len(skipped) > 0 {
				return &partialError{msg: fmt.Sprintf("%s left out of the archive (listed above)", plural(len(skipped), "entry", "entries"))}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&archive, "archive", "tar", "archive format for a directory: tar or zip")
	cmd.Flags().StringVar(&target, "target", "", "write to this new file instead of stdout")
	sf.register(cmd, true)
	maxEntriesFlag(cmd, &maxEntries)
	return cmd
}

func newArchive(kind string, w io.Writer) dumpArchive {
	if kind == "zip" {
		return &zipArchive{w: zip.NewWriter(w)}
	}
	return &tarArchive{w: tar.NewWriter(w)}
}
