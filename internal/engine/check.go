package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// CheckOptions select how deep Check goes.
type CheckOptions struct {
	// ReadData decrypts every blob of every pack and verifies its ID.
	ReadData bool
	// Subset, when set, limits ReadData to some packs (and implies
	// ReadData); the structure of every pack is checked still.
	Subset ReadSubset
	// Progress, when set, is called as packs are checked.
	Progress func(CheckProgress)
}

// CheckProgress reports how far Check has come.
type CheckProgress struct {
	Phase       string // "packs", "snapshots"
	Done, Total int
	Bytes       int64
	Current     string
}

// CheckReport lists what Check found. Errors make the vault unsound;
// warnings are harmless leftovers (an interrupted backup's pack).
type CheckReport struct {
	Packs, Blobs, Snapshots, Trees int
	BytesRead                      int64
	// Subset is the subset of packs whose data was read ("" for all
	// of them, or none without ReadData), PacksRead how many were.
	Subset    string
	PacksRead int
	Errors    []string
	Warnings  []string
	// Damaged names the snapshots' files and directories that use a
	// damaged blob (checkmap.go), at most MaxDamageUses; DamagedMore
	// counts the others.
	Damaged     []DamageUse
	DamagedMore int
}

// OK reports whether no errors were found.
func (r *CheckReport) OK() bool { return len(r.Errors) == 0 }

type reportSink struct {
	mu      sync.Mutex
	r       *CheckReport
	damaged map[blobKey]bool // blobs found damaged (checkmap.go)
	idx     *checkIndex      // what check knows of the whole vault
}

func (s *reportSink) errorf(format string, a ...any) {
	s.mu.Lock()
	s.r.Errors = append(s.r.Errors, fmt.Sprintf(format, a...))
	s.mu.Unlock()
}

func (s *reportSink) warnf(format string, a ...any) {
	s.mu.Lock()
	s.r.Warnings = append(s.r.Warnings, fmt.Sprintf(format, a...))
	s.mu.Unlock()
}

// Check verifies the vault: every catalogued pack exists with its size and
// an authentic header that matches the index; every snapshot object is
// authentic; every tree of every snapshot decodes and every blob it
// references is indexed. With ReadData every blob is decrypted and its ID
// recomputed. It returns an error only when checking itself could not
// proceed (the store cannot be listed); problems go into the report.
func (v *Vault) Check(ctx context.Context, opt CheckOptions) (*CheckReport, error) {
	rep := &CheckReport{}
	// What check must know of the whole vault, in a scratch index on
	// disk rather than in memory (checkindex.go).
	idx, err := newCheckIndex(ctx)
	if err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	defer idx.Close()
	sink := &reportSink{r: rep, idx: idx}
	// Every blob must be found by its lookup key (docs/format.md §4.2):
	// a missing or misdirected key makes it unreadable to a reader that
	// queries the index. The keys go into the scratch index, and each
	// pack's are compared with its header's as the pack is checked.
	keysErr := v.opt.Catalog.PackKeys(ctx, v.rec.ID, func(id vault.ID, keys []uint64) error {
		return idx.addKeys(ctx, id, keys)
	})
	if keysErr != nil {
		sink.errorf("index: %v", keysErr)
	}
	var badKeys int
	if !opt.Subset.IsZero() {
		opt.ReadData = true
		rep.Subset = opt.Subset.String()
	}
	progress := func(p CheckProgress) {
		if opt.Progress != nil {
			opt.Progress(p)
		}
	}

	// The keyring: the store's latest generation must still be the one
	// the catalog anchors, and authenticate (docs/format.md §7.3).
	if ks, root, kerr := v.unwrapKeys(ctx, v.keys.Load().provider); kerr != nil {
		sink.errorf("keys: %v", kerr)
	} else {
		root.Wipe()
		// Objects in keys/ the vault's keys did not write (a store
		// writer's, docs/format.md §7.3): ignored by readers, listed here.
		garbage, gerr := v.keyringGarbage(ctx, ks)
		ks.wipe()
		if gerr != nil {
			sink.errorf("keys: %v", gerr)
		}
		for _, g := range garbage {
			sink.warnf("keys: %s: this object does not authenticate under the vault's keys and is ignored; someone who can write the store put it there: delete it once the bucket's retention allows", g)
		}
	}

	err = v.opt.Store.List(ctx, vault.PackObject, func(oi vault.ObjectInfo) error {
		id, err := vault.ParseID(oi.Handle.Name)
		if err != nil {
			sink.warnf("store: unexpected object %s", oi.Handle)
			return nil
		}
		return idx.addStored(ctx, id, oi.Size)
	})
	if err != nil {
		return nil, fmt.Errorf("check: list packs: %w", err)
	}
	total, _, err := v.opt.Catalog.PackTotals(ctx, v.rec.ID)
	if err != nil {
		return nil, fmt.Errorf("check: catalog packs: %w", err)
	}
	deks, err := v.dekFor(ctx)
	if err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	// Which packs' data is read: a subset by group is decided pack by
	// pack; one by share or size needs the list of packs (IDs and sizes
	// only) to draw from.
	readPack := func(vault.ID) bool { return true }
	switch s := opt.Subset; {
	case s.IsZero():
	case s.M > 0:
		readPack = func(id vault.ID) bool { return subsetGroup(id, s.M) == s.N-1 }
	default:
		var all []vault.PackRecord
		if err := v.opt.Catalog.Packs(ctx, v.rec.ID, func(p vault.PackRecord) error {
			all = append(all, vault.PackRecord{ID: p.ID, Size: p.Size})
			return nil
		}); err != nil {
			return nil, fmt.Errorf("check: catalog packs: %w", err)
		}
		sel := s.selectPacks(all)
		all = nil
		readPack = func(id vault.ID) bool { return sel[id] }
	}

	// The dedup domains a blob may be identified in (docs/format.md §1.3):
	// the vault-wide one and every snapshot's. A pack may mix them (a
	// server packs the blobs of several sources together), so a blob is
	// checked with the domain that identified the one before it first,
	// then with the others.
	domains := []string{""}
	if opt.ReadData {
		recs, err := v.opt.Catalog.Snapshots(ctx, v.rec.ID)
		if err != nil {
			return nil, fmt.Errorf("check: catalog snapshots: %w", err)
		}
		seenDomain := map[string]bool{"": true}
		for _, s := range recs {
			if !seenDomain[s.Domain] && format.CheckDomain(s.Domain) == nil {
				seenDomain[s.Domain] = true
				domains = append(domains, s.Domain)
			}
		}
	}

	// Packs: streamed from the catalog, several checked at once, each
	// read once; each pack's blobs, from the catalog's sealed header copy
	// (docs/format.md §4.1), go into the scratch index.
	workers := max(1, min(runtime.GOMAXPROCS(0), 4))
	jobs := make(chan vault.PackRecord)
	var wg sync.WaitGroup
	var done sync.Mutex
	var idxErr error
	n := 0
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := make([]*format.IDHasher, 0, len(domains))
			for _, d := range domains {
				dh, err := v.DomainHasher(d)
				if err != nil {
					sink.errorf("dedup domain %q: %v", d, err)
					continue
				}
				h = append(h, dh)
			}
			for p := range jobs {
				if p.Header == nil {
					sink.errorf("pack %s: the catalog holds no sealed header copy of it, so none of its blobs is indexed (plaintext blob rows are not trusted); if the pack is in the store, opening the vault again copies its header", p.ID)
				}
				// A header copy that does not open stops the check, naming
				// the pack, as it stops anything that reads the index.
				blobs, err := packBlobs(p, deks)
				if err != nil {
					err = fmt.Errorf("load the blob index: %w", err)
				}
				var size int64
				var stored bool
				if err == nil {
					size, stored, err = idx.catalogued(ctx, p.ID)
				}
				if err == nil {
					err = idx.addBlobs(ctx, blobs, p.Condemned.IsZero())
				}
				keysOK := true
				if err == nil && keysErr == nil && p.Header != nil {
					keysOK, err = v.checkPackKeys(ctx, idx, p, blobs)
				}
				readThis := opt.ReadData && readPack(p.ID)
				var read int64
				if err == nil {
					read = v.checkPack(ctx, p, size, stored, blobs, readThis, h, sink)
				}
				done.Lock()
				if err != nil && idxErr == nil {
					idxErr = err
				}
				if !keysOK {
					badKeys++
				}
				n++
				rep.Blobs += len(blobs)
				if readThis {
					rep.PacksRead++
				}
				rep.BytesRead += read
				progress(CheckProgress{Phase: "packs", Done: n, Total: total, Bytes: rep.BytesRead, Current: p.ID.Short()})
				done.Unlock()
			}
		}()
	}
	var packsErr error
	if opt.ReadData {
		// Reading every pack takes long (hours on a large vault): the
		// catalog's listing is not held open meanwhile, which would keep
		// a SQLite catalog's write-ahead log from being checkpointed
		// while backups write. The pack IDs go to the scratch index
		// first, and each pack's record is read as its turn comes.
		packsErr = v.opt.Catalog.Packs(ctx, v.rec.ID, func(p vault.PackRecord) error {
			return idx.addPackID(ctx, p.ID)
		})
		if packsErr == nil {
			packsErr = idx.eachPackID(ctx, func(id vault.ID) error {
				if err := ctx.Err(); err != nil {
					return err
				}
				p, err := v.opt.Catalog.Pack(ctx, v.rec.ID, id)
				if errors.Is(err, vault.ErrNotFound) {
					return nil // removed by a prune since it was listed
				}
				if err != nil {
					return err
				}
				rep.Packs++
				jobs <- p
				return nil
			})
		}
	} else {
		packsErr = v.opt.Catalog.Packs(ctx, v.rec.ID, func(p vault.PackRecord) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			rep.Packs++
			jobs <- p
			return nil
		})
	}
	close(jobs)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if packsErr != nil {
		return nil, fmt.Errorf("check: catalog packs: %w", packsErr)
	}
	if idxErr != nil {
		return nil, fmt.Errorf("check: %w", idxErr)
	}
	if badKeys > 0 {
		sink.errorf("index: the catalog's lookup keys of %d packs do not match their sealed headers, so some of their blobs cannot be found; run coffer repair index", badKeys)
	}
	if err := idx.uncatalogued(ctx, func(id vault.ID) {
		sink.warnf("pack %s is in the store but not in the catalog (left by an interrupted backup; harmless)", id)
	}); err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}

	// Snapshots and their trees, soft-deleted ones too: undelete
	// promises them intact. The chain is checked first (docs/format.md
	// §8.2), every problem reported.
	ks, err := v.liveKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	pin, pinErr := v.loadPin() // before the chain is read (loadPin)
	entries, snaps, err := v.opt.Catalog.SnapshotChain(ctx, v.rec.ID)
	if err != nil {
		return nil, fmt.Errorf("check: catalog snapshots: %w", err)
	}
	chain := v.verifyChain(ks, entries, snaps, v.describeRecord(ctx))
	v.checkPin(chain, pin, pinErr)
	for _, p := range chain.problems {
		sink.errorf("%s", p)
	}
	if len(chain.problems) == 0 {
		// The settings, bound to the chain (§8.4); with problems in the
		// chain they cannot be verified, and those are reported already.
		if _, err := v.Settings(ctx); errors.Is(err, vault.ErrCorrupt) {
			sink.errorf("%s", strings.TrimPrefix(err.Error(), vault.ErrCorrupt.Error()+": "))
		} else if err != nil {
			return nil, fmt.Errorf("check: settings: %w", err)
		}
	}
	rep.Snapshots = len(snaps)
	inCatalog := map[vault.ID]bool{}
	for _, s := range snaps {
		inCatalog[s.ID] = true
	}
	var orphans []vault.ID
	if err := v.opt.Store.List(ctx, vault.SnapshotObject, func(oi vault.ObjectInfo) error {
		id, err := vault.ParseID(oi.Handle.Name)
		switch {
		case err != nil:
			sink.warnf("snapshot object %s is not in the catalog", oi.Handle.Name)
		case !inCatalog[id]:
			orphans = append(orphans, id)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("check: list snapshots: %w", err)
	}
	head := chain.head()
	for _, id := range orphans {
		_, link, err := v.loadSnapshotLinked(ctx, id)
		switch {
		case err != nil:
			sink.warnf("snapshot object %s is not in the catalog, and does not open: %v", id, err)
		case link.Seq > head.Seq+1:
			// Sealed after entry link.Seq-1 was written: the chain was
			// longer once (docs/format.md §8.2).
			sink.errorf("snapshot %s: its object was sealed as chain entry %d, but the catalog's chain proves only %d entries: entries were removed from the catalog (the snapshot list was rolled back)", id.Short(), link.Seq, head.Seq)
		case link.Seq > 0:
			sink.warnf("snapshot object %s (sealed as chain entry %d) is not in the catalog: left by an interrupted backup, or the newest entries were removed from the catalog", id.Short(), link.Seq)
		default:
			sink.warnf("snapshot object %s is not in the catalog", id)
		}
	}
	if len(chain.problems) == 0 {
		v.advancePin(head)
	}
	bad := map[vault.ID]string{}
	// Which forgotten snapshots a repair replaced, from the sealed
	// objects that match the chain, never from catalog rows alone.
	var sealed []vault.SnapshotRecord
	for _, s := range snaps {
		if obj, link, err := v.loadSnapshotLinked(ctx, s.ID); err == nil && chain.checkObject(s, obj, link) == "" {
			obj.ID, obj.Deleted = s.ID, s.Deleted // the chain proves the state (verifyChain)
			sealed = append(sealed, obj)
		}
	}
	replaced := repairedOriginals(sealed)
	for i, s := range snaps {
		progress(CheckProgress{Phase: "snapshots", Done: i, Total: len(snaps), Current: s.ID.Short()})
		n := len(rep.Errors)
		v.checkSnapshot(ctx, s, chain, bad, sink)
		if by, ok := replaced[s.ID]; ok {
			// A forgotten snapshot that coffer repair replaced: its damage
			// is known and its repaired copy is checked in full; it is
			// listed, as warnings, until prune removes it.
			sink.mu.Lock()
			for _, e := range rep.Errors[n:] {
				rep.Warnings = append(rep.Warnings, fmt.Sprintf("forgotten snapshot %s, replaced by repaired snapshot %s: %s", s.ID.Short(), by.Short(), e))
			}
			rep.Errors = rep.Errors[:n]
			sink.mu.Unlock()
		}
	}
	if rep.Trees, err = idx.trees(ctx); err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	// Only once damage is found: which files it touches.
	if sink.anyDataLost() {
		progress(CheckProgress{Phase: "damage", Done: 0, Total: len(snaps)})
		v.mapDamage(ctx, snaps, sink)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return rep, nil
}

// checkPackKeys reports whether the catalog's lookup keys of pack p are
// those of its blobs (from its sealed header copy) and each finds it, as
// keyPacks would.
func (v *Vault) checkPackKeys(ctx context.Context, idx *checkIndex, p vault.PackRecord, blobs []vault.BlobRecord) (bool, error) {
	if !p.Keyed {
		return false, nil
	}
	have, err := idx.packKeys(ctx, p.ID)
	if err != nil {
		return false, err
	}
	keys := v.keysOf(blobs)
	if !equalKeys(have, keys) {
		return false, nil
	}
	return v.keysPointAt(ctx, p.ID, keys)
}

// checkSnapshot checks snapshot s's object and its trees.
func (v *Vault) checkSnapshot(ctx context.Context, s vault.SnapshotRecord, chain *chainReport, bad map[vault.ID]string, sink *reportSink) {
	obj, link, err := v.loadSnapshotLinked(ctx, s.ID)
	if err != nil {
		sink.errorf("snapshot %s: %v", s.ID.Short(), err)
		return
	}
	if d := chain.checkObject(s, obj, link); d != "" {
		sink.errorf("snapshot %s: %s", s.ID.Short(), d)
		if obj.Tree != s.Tree {
			return
		}
	}
	trees, err := v.checkTrees(s.Domain, sink.idx)
	if err != nil {
		sink.errorf("snapshot %s: %v", s.ID.Short(), err)
		return
	}
	v.checkTree(ctx, trees, s, s.Tree, "/", bad, sink)
}

// repairedOriginals maps each forgotten snapshot that coffer repair
// replaced to its repaired snapshot: one that names it as its Parent and
// has its time, host and domain. A backup's parent is always older than
// the backup, so only a repair makes such a pair; and only a key holder
// seals snapshot objects with a time of its choosing (a server stamps
// its own).
func repairedOriginals(snaps []vault.SnapshotRecord) map[vault.ID]vault.ID {
	byID := map[vault.ID]vault.SnapshotRecord{}
	for _, s := range snaps {
		byID[s.ID] = s
	}
	out := map[vault.ID]vault.ID{}
	for _, r := range snaps {
		o, ok := byID[r.Parent]
		if ok && r.ID != o.ID && !o.Deleted.IsZero() && r.Time.Equal(o.Time) && r.Host == o.Host && r.Domain == o.Domain {
			out[o.ID] = r.ID
		}
	}
	return out
}

// checkTree checks tree id of snapshot s and what it references. A
// tree found bad is reported for every snapshot that reaches it (bad
// remembers why), so that check names each snapshot that cannot be
// restored in full.
func (v *Vault) checkTree(ctx context.Context, trees domainReader, s vault.SnapshotRecord, id vault.ID, path string, bad map[vault.ID]string, sink *reportSink) {
	if ctx.Err() != nil {
		return
	}
	first, err := sink.idx.visit(ctx, id)
	if err != nil {
		sink.errorf("snapshot %s: tree %s (%s): %v", s.ID.Short(), id.Short(), path, err)
		return
	}
	if !first {
		if why, ok := bad[id]; ok {
			sink.errorf("snapshot %s: tree %s (%s) %s", s.ID.Short(), id.Short(), path, why)
			sink.use(DamageUse{Snapshot: s.ID, Path: path, Tree: true, Blob: id})
		}
		return
	}
	b, err := trees.LoadBlob(ctx, vault.TreeBlob, id, nil)
	if err != nil {
		bad[id] = fmt.Sprintf("cannot be read: %v", err)
		sink.errorf("snapshot %s: tree %s (%s): %v", s.ID.Short(), id.Short(), path, err)
		sink.use(DamageUse{Snapshot: s.ID, Path: path, Tree: true, Blob: id})
		return
	}
	t, err := format.DecodeTree(b)
	if err != nil {
		sink.use(DamageUse{Snapshot: s.ID, Path: path, Tree: true, Blob: id})
		// Read intact and matching its ID: it was stored this way (a
		// writer sent garbage), it was not damaged since.
		bad[id] = fmt.Sprintf("is not a valid tree, as its writer stored it (its content matches its ID): %v; the snapshot cannot be restored below it: forget the snapshot", err)
		sink.errorf("snapshot %s: tree %s (%s) %s", s.ID.Short(), id.Short(), path, bad[id])
		return
	}
	for _, n := range t.Nodes {
		p := path + string(n.Name)
		switch n.Kind {
		case format.KindDir:
			v.checkTree(ctx, trees, s, n.Subtree, p+"/", bad, sink)
		case format.KindFile:
			for _, c := range n.Content {
				r, stored, ok, err := sink.idx.lookup(ctx, vault.DataBlob, c)
				if err != nil {
					sink.errorf("snapshot %s: %s: data blob %s: %v", s.ID.Short(), p, c.Short(), err)
					break
				}
				if !ok {
					sink.errorf("snapshot %s: %s: data blob %s is missing from the index", s.ID.Short(), p, c.Short())
					sink.lost(vault.DataBlob, c)
					break
				}
				if !stored {
					sink.errorf("snapshot %s: %s: data blob %s is in pack %s, which is missing from the store", s.ID.Short(), p, c.Short(), r.Pack.Short())
					break
				}
			}
		}
	}
}

// checkPack checks one catalogued pack and returns the bytes it read.
func (v *Vault) checkPack(ctx context.Context, p vault.PackRecord, size int64, ok bool, blobs []vault.BlobRecord, readData bool, h []*format.IDHasher, sink *reportSink) int64 {
	switch {
	case !ok && !p.Condemned.IsZero():
		// Prune deletes a condemned pack from the store, then from the
		// catalog: interrupted in between, it leaves this record, which
		// the next prune removes. No snapshot needs the pack (checked
		// below, with the trees).
		sink.warnf("pack %s: unused and deleted from the store by an interrupted prune; the next prune removes its record", p.ID)
		return 0
	case !ok:
		sink.errorf("pack %s: missing from the store (%d blobs lost)", p.ID, len(blobs))
		for _, b := range blobs {
			sink.lost(b.Type, b.ID)
		}
		return 0
	}
	if size != p.Size {
		sink.errorf("pack %s: %v: the store holds %d bytes, the catalog expects %d", p.ID, vault.ErrTruncated, size, p.Size)
		// The blobs it still holds whole may be intact (a restore reads
		// them); those cut off are lost.
		for _, b := range blobs {
			if int64(b.Offset)+int64(b.Length) > size {
				sink.lost(b.Type, b.ID)
			}
		}
		return 0
	}
	var ra io.ReaderAt = &storeReaderAt{ctx: ctx, s: v.opt.Store, h: packHandle(p.ID)}
	var whole []byte
	if readData {
		b, err := readRange(ctx, v.opt.Store, packHandle(p.ID), 0, size)
		if err != nil {
			sink.errorf("pack %s: %v", p.ID, err)
			return 0
		}
		whole = b
		ra = bytes.NewReader(b)
	}
	deks, err := v.dekFor(ctx)
	if err != nil {
		sink.errorf("pack %s: %v", p.ID, err)
		return int64(len(whole))
	}
	o, entries, err := format.ReadPackHeader(p.ID, ra, size, deks)
	if err != nil {
		sink.errorf("%v", err)
		if readData {
			// A restore reads blobs where the catalog says, not through
			// the header: which of them are intact?
			v.checkBlobsWithoutHeader(p, whole, blobs, deks, h, sink)
		}
		return int64(len(whole))
	}
	if p.Header != nil {
		// The catalog's copy must be the pack's own sealed header.
		h := int64(len(p.Header))
		got := make([]byte, h)
		if h > size-4 {
			sink.errorf("pack %s: the catalog's copy of its header is longer than the pack", p.ID)
		} else if _, err := ra.ReadAt(got, size-4-h); err != nil || !bytes.Equal(got, p.Header) {
			sink.errorf("pack %s: the catalog's copy of its header differs from the pack's", p.ID)
		}
	}
	if p.Header == nil {
		return int64(len(whole)) // reported above: nothing to compare
	}
	want := map[format.PackEntry]bool{}
	for _, b := range blobs {
		want[format.PackEntry{Type: b.Type, ID: b.ID, Offset: b.Offset, Length: b.Length, RawLen: b.RawLen}] = true
	}
	for _, e := range entries {
		if !want[e] {
			sink.errorf("pack %s: header lists %s blob %s at %d that the catalog does not", p.ID, e.Type, e.ID.Short(), e.Offset)
		}
		delete(want, e)
	}
	for e := range want {
		sink.errorf("pack %s: catalog lists %s blob %s at %d that the pack header does not", p.ID, e.Type, e.ID.Short(), e.Offset)
	}
	if !readData {
		return 0
	}
	var plain, data []byte
	for _, e := range entries {
		sealed := whole[e.Offset : e.Offset+e.Length]
		pt, err := o.Open(plain[:0], e.Type, e.ID, e.Offset, sealed)
		if err != nil {
			sink.errorf("%v", err)
			sink.lost(e.Type, e.ID)
			continue
		}
		plain = pt
		d, err := v.codec.Decode(data, pt, e.RawLen)
		if err != nil {
			sink.errorf("pack %s: blob %s: %v", p.ID, e.ID, err)
			sink.lost(e.Type, e.ID)
			continue
		}
		data = d
		if !matchID(h, d, e.ID) {
			sink.errorf("pack %s: blob %s: %v: content does not match its ID in any dedup domain of the vault", p.ID, e.ID, vault.ErrCorrupt)
			sink.lost(e.Type, e.ID)
		}
	}
	return int64(len(whole))
}

// matchID reports whether data hashes to id with one of hs, and moves
// the one that matched to the front: neighbouring blobs usually share a
// domain, so most blobs cost one hash.
func matchID(hs []*format.IDHasher, data []byte, id vault.ID) bool {
	for i, h := range hs {
		if h.ID(data) == id {
			if i > 0 {
				hs[0], hs[i] = hs[i], hs[0]
			}
			return true
		}
	}
	return false
}

type storeReaderAt struct {
	ctx context.Context
	s   vault.Store
	h   vault.Handle
}

func (r *storeReaderAt) ReadAt(p []byte, off int64) (int, error) {
	rc, err := r.s.Get(r.ctx, r.h, off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	n, err := io.ReadFull(rc, p)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = io.EOF
	}
	return n, err
}
