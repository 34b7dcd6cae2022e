package agent

import (
	"context"
	"fmt"
	"os"
	"path"
	"strings"
	"time"

	"github.com/coffer-backup/coffer/internal/format"
)

// StdinPerm is the permission of the file a backup of standard input
// stores: a database dump is rarely for everyone's eyes, and a restore
// creates the file with it.
const StdinPerm = 0o600

// StdinPath turns the name given for standard input (coffer backup
// --stdin-filename) into the absolute path the snapshot records: "/" and
// the cleaned name. Empty is "stdin". A name that climbs out (".."), holds
// a NUL or names the root is refused.
func StdinPath(name string) (string, error) {
	if name == "" {
		name = "stdin"
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("stdin file name %q holds a NUL byte", name)
	}
	for _, part := range strings.Split(strings.Trim(name, "/"), "/") {
		if part == ".." {
			return "", fmt.Errorf("stdin file name %q: .. is not allowed; give a name such as mydb.sql or dumps/mydb.sql", name)
		}
	}
	p := path.Clean("/" + name)
	if p == "/" {
		return "", fmt.Errorf("stdin file name %q names no file; give a name such as mydb.sql", name)
	}
	return p, nil
}

// stdinTree stores the backup's standard input as one file at the virtual
// path p (from StdinPath), in directories made up on the way to it, all
// owned by this process's user and dated now. Its chunks go through the
// same chunkers and workers as a file's, so an unchanged dump of the same
// data dedups against the last one. A read error fails the backup: a
// snapshot of a cut-short stream would pass for a good one.
func (b *backup) stdinTree(ctx context.Context, p string, now time.Time) *treeFuture {
	t := now.UnixNano()
	uid, gid := uint64(os.Getuid()), uint64(os.Getgid())
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	nodes := []format.Node{{
		Kind: format.KindFile, Name: []byte(parts[len(parts)-1]), Perm: StdinPerm,
		UID: uid, GID: gid, MTime: t, CTime: t, NLink: 1,
	}}
	j := &fileJob{path: p, node: &nodes[0], done: make(chan struct{})}
	b.files.Add(1)
	go b.readStdin(ctx, j)
	fut := b.finishDir(ctx, path.Dir(p), nodes, []*treeFuture{{done: j.done}})
	for i := len(parts) - 2; i >= 0; i-- {
		dir := []format.Node{{
			Kind: format.KindDir, Name: []byte(parts[i]), Perm: 0o700,
			UID: uid, GID: gid, MTime: t, CTime: t, NLink: 1,
		}}
		sub := chainSubtree(fut, &dir[0])
		fut = b.finishDir(ctx, "/"+strings.Join(parts[:i], "/"), dir, []*treeFuture{sub})
	}
	return fut
}

func (b *backup) readStdin(ctx context.Context, j *fileJob) {
	p := j.path
	b.current.Store(&p)
	j.pending.Store(1) // the reader's own token
	defer b.release(j)
	size, err := b.readChunked(ctx, j, b.opt.Stdin, 0)
	if err != nil {
		j.failed.Store(true)
		if ctx.Err() == nil {
			b.fail(fmt.Errorf("read standard input: %w (nothing was saved)", err))
		}
		return
	}
	j.node.Size = size
}
