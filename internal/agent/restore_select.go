package agent

import (
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strings"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// restoreExcluder compiles a restore's excludes. Only patterns apply: the
// other rules of a backup look at the file system being read.
func restoreExcluder(r ExcludeRules) (*excluder, error) {
	if len(r.IfPresent) > 0 || r.Caches || r.LargerThan > 0 || r.OneFileSystem {
		return nil, errors.New("restore: only exclude patterns apply to a restore")
	}
	if len(r.Patterns) == 0 {
		return nil, nil
	}
	return compileExcludes(ExcludeRules{Patterns: r.Patterns}, nil)
}

// excluded reports whether the entry at snapshot path p (without its
// leading slash) is left out by the restore's exclude patterns. They
// match the path in the snapshot, as a backup's matched it on the disk:
// the same pattern leaves out the same entries in both.
func (r *restorer) excluded(p string, n *format.Node) bool {
	return r.excl != nil && r.excl.match("/"+p, n.Kind == format.KindDir)
}

func cleanIncludes(in []string) []string {
	var incl []string
	for _, p := range in {
		p = path.Clean("/" + filepath.ToSlash(p))
		incl = append(incl, strings.TrimPrefix(p, "/"))
	}
	return incl
}

// checkIncludes refuses an --include that names nothing in the snapshot
// (a typo must not restore nothing, silently).
func (r *restorer) checkIncludes(incl []string, matched map[string]bool) error {
	for i, p := range incl {
		if p != "" && !matched[p] && !r.underLost(p) {
			return fmt.Errorf("restore: --include %s: %w in the snapshot", r.opt.Include[i], vault.ErrNotFound)
		}
	}
	return nil
}

// dryRun reads the snapshot's trees as a restore would and counts what it
// would restore; it writes nothing and does not create the target. Data
// is not read: damage to data blobs is not found (check --read-data is).
func dryRun(ctx context.Context, repo RestoreRepo, rootID vault.ID, opt RestoreOptions, excl *excluder) (*RestoreResult, error) {
	r := &restorer{repo: repo, opt: opt, trees: map[vault.ID]*format.Tree{}, excl: excl}
	incl := cleanIncludes(opt.Include)
	matched := map[string]bool{}
	if err := r.scan(ctx, rootID, "", incl, matched, &entryBudget{max: opt.MaxEntries}); err != nil {
		return nil, err
	}
	if err := r.checkIncludes(incl, matched); err != nil {
		return nil, err
	}
	res := &RestoreResult{LostDirs: r.lostDirs}
	var ver *dryVerifier
	if opt.Verify {
		ver = newDryVerifier(ctx, repo)
	}
	hard := map[[2]uint64]bool{}
	var walk func(id vault.ID, rel string) error
	walk = func(id vault.ID, rel string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		t, ok, err := r.passTwoTree(ctx, id, rel)
		if !ok {
			return err
		}
		for i := range t.Nodes {
			n := &t.Nodes[i]
			p := joinRel(rel, string(n.Name))
			if !included(p, incl) || r.excluded(p, n) {
				continue
			}
			switch n.Kind {
			case format.KindDir:
				if _, bad := r.badTrees[n.Subtree]; bad {
					continue
				}
				res.Dirs++
			case format.KindFile:
				res.Files++
				if key := [2]uint64{n.Device, n.Inode}; n.NLink > 1 {
					if hard[key] {
						break // a hard link: no data of its own
					}
					hard[key] = true
				}
				res.Bytes += n.Size
				if ver != nil {
					if err := ver.add(p, n); err != nil {
						return err
					}
				}
			case format.KindSocket:
				continue // never restored
			}
			if opt.Entry != nil {
				opt.Entry(displayRel(p), n)
			}
			if n.Kind == format.KindDir {
				if err := walk(n.Subtree, p); err != nil {
					return err
				}
			}
		}
		return nil
	}
	err := walk(rootID, "")
	if ver != nil {
		var verr error
		res.Verified, res.Damaged, verr = ver.finish()
		if err == nil {
			err = verr
		}
	}
	if err != nil {
		return nil, err
	}
	res.LostDirs = r.lostDirs
	return res, nil
}
