package audit

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Kind classifies a verification problem.
type Kind string

// Problem kinds. Each one means the log is not what the server wrote.
const (
	KindEntryChanged       Kind = "entry-changed"       // a record does not hash to the hash stored when it was appended
	KindEntryMoved         Kind = "entry-moved"         // a record is one that was appended at another index (reordered)
	KindEntryMissing       Kind = "entry-missing"       // indexes below the log's size hold no record
	KindHashes             Kind = "stored-hashes"       // stored tree hashes differ from those recomputed, are missing, or outlive their entries
	KindSignature          Kind = "checkpoint-invalid"  // a checkpoint that the audit key did not sign, or not a checkpoint
	KindCheckpointMismatch Kind = "checkpoint-mismatch" // a signed checkpoint that the entries no longer produce
	KindRollback           Kind = "rollback"            // a signed checkpoint, or stored hashes, for more entries than the log holds
	KindCheckpointRemoved  Kind = "checkpoint-removed"  // the trusted checkpoint is newer than any stored one
	KindUnproven           Kind = "unproven"            // entries no signed checkpoint covers, older than a checkpoint takes to come
)

// Problem is one finding of Verify or VerifyExport.
type Problem struct {
	Kind Kind
	// Index and End delimit the entries concerned, [Index, End); both
	// -1 when the problem is not about entries.
	Index, End int64
	// Checkpoint is the size of the checkpoint concerned, -1 when none.
	Checkpoint int64
	Message    string
}

func (p Problem) String() string {
	return fmt.Sprintf("%s: %s", p.Kind, p.Message)
}

// UnprovenGrace is how old the first entry after the latest checkpoint
// may be before Verify reports it (KindUnproven): the server signs one
// within CheckpointEvery of an entry, and again when it starts.
const UnprovenGrace = 5 * time.Minute

// maxListed bounds the problems listed one by one; Report.Omitted counts
// the rest.
const maxListed = 1000

// Report is the outcome of a verification. It lists every problem found,
// not only the first.
type Report struct {
	Entries     int64       // entries in the log (one more than the highest index)
	Tree        tlog.Tree   // the tree recomputed from the entries; N is -1 when entries are missing
	Checkpoints int         // signed checkpoints that verify and match the entries
	Latest      *Checkpoint // the newest of those; nil when none
	Unproven    int64       // entries after Latest: not (yet) covered by a signature
	TrustedOK   bool        // a trusted checkpoint was given, and the log extends it
	Notes       []string    // what was and was not checked, informational
	Problems    []Problem
	Omitted     int // problems found but not listed

	signed int64 // size of the newest checkpoint signed by the key, matching or not
}

// sortProblems orders the problems by the first entry they concern;
// those about no entry come last.
func (r *Report) sortProblems() {
	key := func(p Problem) int64 {
		if p.Index < 0 {
			return 1<<63 - 1
		}
		return p.Index
	}
	slices.SortStableFunc(r.Problems, func(a, b Problem) int { return cmpInt(key(a), key(b)) })
}

// OK reports whether no problem was found.
func (r *Report) OK() bool { return len(r.Problems) == 0 && r.Omitted == 0 }

// Err returns nil if r is OK, otherwise an error wrapping ErrTampered
// that names the problems.
func (r *Report) Err() error {
	if r.OK() {
		return nil
	}
	var b strings.Builder
	for i, p := range r.Problems {
		if i == 3 {
			fmt.Fprintf(&b, "; and %d more", len(r.Problems)-3+r.Omitted)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	return fmt.Errorf("%w: %s", ErrTampered, b.String())
}

// String is a summary for people, one finding a line.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d entries", r.Entries)
	if r.Tree.N >= 0 {
		fmt.Fprintf(&b, " (tree hash %s)", r.Tree.Hash)
	}
	if r.Latest != nil {
		fmt.Fprintf(&b, "; the newest signed checkpoint that matches them covers %d", r.Latest.Size)
	} else {
		b.WriteString("; no signed checkpoint matches them")
	}
	fmt.Fprintf(&b, "; %d entries after it\n", r.Unproven)
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "PROBLEM %s\n", p)
	}
	if r.Omitted > 0 {
		fmt.Fprintf(&b, "PROBLEM … and %d more problems\n", r.Omitted)
	}
	if r.OK() {
		b.WriteString("OK\n")
	}
	return b.String()
}

func (r *Report) add(p Problem) {
	if len(r.Problems) >= maxListed {
		r.Omitted++
		return
	}
	r.Problems = append(r.Problems, p)
}

func (r *Report) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// VerifyOptions are the optional inputs of Verify and VerifyExport.
type VerifyOptions struct {
	// Trusted is a checkpoint the verifier saw earlier and kept outside
	// the server (an auditor's copy). The log must extend it: this is
	// what detects a rollback to an earlier, self-consistent state,
	// which nothing inside the catalog can reveal.
	Trusted *Checkpoint
	// Now, when set, lets Verify report entries left unsigned for
	// longer than UnprovenGrace (KindUnproven). VerifyExport ignores it:
	// an export must be covered exactly by its checkpoint.
	Now time.Time
	// PreviousKeys are verifier keys the log was signed with before its
	// key was rotated, which the auditor accepted: checkpoints (Trusted
	// included) signed by one of them verify too. Without them, a
	// checkpoint signed by any key but vkey is a problem.
	PreviousKeys []string
}

// verifiers returns the verifiers of vkey and of the previous keys.
func verifiers(vkey string, previous []string) (note.Verifiers, error) {
	var vs []note.Verifier
	for i, k := range append([]string{vkey}, previous...) {
		v, err := note.NewVerifier(k)
		if err != nil {
			if i > 0 {
				return nil, fmt.Errorf("previous verifier key %q: %w", k, err)
			}
			return nil, fmt.Errorf("verifier key: %w", err)
		}
		vs = append(vs, v)
	}
	return note.VerifierList(vs...), nil
}

// frontier is a tlog.HashReader holding, for each tree level, only the
// newest complete node: all that tlog.StoredHashes and tlog.TreeHash
// need for the records that follow, so a verifier reads any number of
// entries in O(log n) memory.
type frontier map[int64]tlog.Hash

func (f frontier) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	hs := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		h, ok := f[x]
		if !ok {
			return nil, fmt.Errorf("hash %d not in the frontier", x)
		}
		hs[i] = h
	}
	return hs, nil
}

// add records the hashes tlog.StoredHashes returned for record n: hs[l]
// is the node at level l, index n>>l, which replaces the node before it
// on that level (never needed again: a later tree's subtrees start at or
// after it).
func (f frontier) add(n int64, hs []tlog.Hash) {
	for l, h := range hs {
		k := n >> l
		f[tlog.StoredHashIndex(l, k)] = h
		if k > 0 {
			delete(f, tlog.StoredHashIndex(l, k-1))
		}
	}
}

// cpTree is a checkpoint to check against the entries.
type cpTree struct {
	c       Checkpoint
	t       tlog.Tree
	trusted bool
}

// checkpointSource yields checkpoints by increasing size.
type checkpointSource interface {
	next() (Checkpoint, bool, error)
}

// checker recomputes the tree from records given in index order and
// checks checkpoints against it.
type checker struct {
	r   *Report
	vs  note.Verifiers
	src checkpointSource

	pos      int64 // records processed
	frontier frontier
	broken   int64 // first index whose hash is unknown (entry and stored hash gone), -1 while computable

	peeked  *Checkpoint
	queue   []cpTree // verified checkpoints of size >= pos, by size
	trusted *cpTree

	latest    *Checkpoint           // newest stored checkpoint that matches
	maxSigned int64                 // size of the newest stored checkpoint that verifies, matching or not
	sizeNow   func() (int64, error) // the log's size now, to tell growth from rollback; nil for an archive
	matched   int64                 // size of the newest matching checkpoint, trusted included
	mismatch  *Problem              // the open run of mismatching checkpoints
	beyond    *Problem              // checkpoints for more entries than the log has
	unchecked []int64               // checkpoint sizes that could not be checked (broken)

	// Store mode: comparisons with stored hashes.
	storeMode     bool
	badLeaves     []int64 // indexes whose record differs from the stored leaf hash, ascending
	leafMismatch  []leafMismatch
	missing       *Problem // the open run of missing entries
	hashDiffer    int64    // stored hashes that differ, unexplained by a changed entry
	hashMissing   int64    // stored hashes missing
	firstHashBad  int64    // storage index of the first of those, -1 when none
	firstHashLeaf int64    // the entry it concerns
	badEntries    int64    // records that do not parse
	firstBadEntry int64
}

type leafMismatch struct {
	index          int64
	got, wasStored tlog.Hash
}

func newChecker(vs note.Verifiers, src checkpointSource) *checker {
	return &checker{
		r: &Report{}, vs: vs, src: src, frontier: frontier{},
		broken: -1, firstHashBad: -1, firstBadEntry: -1,
	}
}

// setTrusted adds the caller's trusted checkpoint.
func (c *checker) setTrusted(t *Checkpoint) {
	if t == nil {
		c.r.note("no trusted checkpoint given: a rollback of the whole log to an earlier state it was in (entries, hashes and checkpoints removed together) cannot be told from a log that never grew; pass the last checkpoint you verified to detect it")
		return
	}
	tree, err := openCheckpoint(*t, c.vs)
	if err != nil {
		c.r.add(Problem{Kind: KindSignature, Index: -1, End: -1, Checkpoint: t.Size,
			Message: fmt.Sprintf("the trusted checkpoint of %d entries does not verify with this verifier key (%v): the log's key was replaced, or the wrong key was given", t.Size, err)})
		return
	}
	c.trusted = &cpTree{c: *t, t: tree, trusted: true}
	c.enqueue(*c.trusted)
}

func (c *checker) enqueue(ct cpTree) {
	i, _ := slices.BinarySearchFunc(c.queue, ct.t.N, func(a cpTree, n int64) int { return cmpInt(a.t.N, n) })
	c.queue = slices.Insert(c.queue, i, ct)
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// pull reads checkpoints of size <= upTo from the source, verifying
// their signatures, and queues the valid ones.
func (c *checker) pull(upTo int64) error {
	for {
		if c.peeked == nil {
			cp, ok, err := c.src.next()
			if err != nil {
				return err
			}
			if !ok {
				return nil
			}
			c.peeked = &cp
		}
		cp := *c.peeked
		if cp.Size > upTo {
			return nil
		}
		c.peeked = nil
		t, err := openCheckpoint(cp, c.vs)
		if err != nil {
			c.r.add(Problem{Kind: KindSignature, Index: -1, End: -1, Checkpoint: cp.Size,
				Message: fmt.Sprintf("checkpoint recorded for %d entries: %v", cp.Size, err)})
			continue
		}
		c.maxSigned = max(c.maxSigned, t.N)
		c.enqueue(cpTree{c: cp, t: t})
	}
}

// beyondLog records a valid checkpoint for more entries than the log
// has.
func (c *checker) beyondLog(ct cpTree) {
	n := c.pos
	if ct.trusted {
		c.r.add(Problem{Kind: KindRollback, Index: n, End: ct.t.N, Checkpoint: ct.t.N,
			Message: fmt.Sprintf("the trusted checkpoint covers %d entries but the log holds %d: entries %d..%d were removed (the log was rolled back)", ct.t.N, n, n, ct.t.N-1)})
		return
	}
	if c.beyond == nil {
		c.beyond = &Problem{Kind: KindRollback, Index: n, Checkpoint: ct.t.N}
	}
	c.beyond.End = max(c.beyond.End, ct.t.N)
	c.beyond.Message = fmt.Sprintf("signed checkpoints cover up to %d entries but the log holds %d: entries %d..%d were removed (the log was rolled back)",
		c.beyond.End, n, n, c.beyond.End-1)
}

// record processes the record at index c.pos. rec is nil when the entry
// is missing. stored holds the stored hashes at the storage indexes
// written with this record (tlog.StoredHashCount(pos)…), and has[i] says
// whether stored[i] exists; both are nil outside store mode.
func (c *checker) record(rec []byte, present bool, stored []tlog.Hash, has []bool) error {
	i := c.pos
	var h tlog.Hash
	if present {
		c.closeMissing()
		h = tlog.RecordHash(rec)
		if _, err := ParseRecord(rec); err != nil {
			if c.badEntries == 0 {
				c.firstBadEntry = i
			}
			c.badEntries++
		}
		if c.storeMode {
			switch {
			case !has[0]:
				c.hashProblem(false, tlog.StoredHashIndex(0, i), i)
			case stored[0] != h:
				c.badLeaves = append(c.badLeaves, i)
				if len(c.leafMismatch) < maxListed {
					c.leafMismatch = append(c.leafMismatch, leafMismatch{index: i, got: h, wasStored: stored[0]})
				} else {
					c.r.Omitted++
				}
			}
		}
	} else {
		if c.missing == nil {
			c.missing = &Problem{Kind: KindEntryMissing, Index: i, Checkpoint: -1}
		}
		c.missing.End = i + 1
		if c.storeMode && has[0] {
			h = stored[0] // the hash stored when it was appended keeps the tree computable
		} else if c.broken < 0 {
			c.broken = i
		}
	}

	if c.broken < 0 {
		hs, err := tlog.StoredHashesForRecordHash(i, h, c.frontier)
		if err != nil {
			return fmt.Errorf("recompute tree: %w", err)
		}
		if c.storeMode {
			for l := 1; l < len(hs); l++ {
				x := tlog.StoredHashIndex(l, i>>l)
				switch {
				case l >= len(stored) || !has[l]:
					c.hashProblem(false, x, i)
				case stored[l] != hs[l] && !c.explained(l, i):
					c.hashProblem(true, x, i)
				}
			}
		}
		c.frontier.add(i, hs)
	}
	c.pos++
	return c.checkpointsAt(c.pos)
}

// explained reports whether the level-l node over record i differs
// because a record under it does.
func (c *checker) explained(l int, i int64) bool {
	lo := (i >> l) << l
	j, _ := slices.BinarySearch(c.badLeaves, lo)
	return j < len(c.badLeaves) && c.badLeaves[j] <= i
}

func (c *checker) hashProblem(differ bool, x, i int64) {
	if differ {
		c.hashDiffer++
	} else {
		c.hashMissing++
	}
	if c.firstHashBad < 0 {
		c.firstHashBad, c.firstHashLeaf = x, i
	}
}

func (c *checker) closeMissing() {
	if c.missing == nil {
		return
	}
	p := c.missing
	c.missing = nil
	if p.End-p.Index == 1 {
		p.Message = fmt.Sprintf("entry %d is missing", p.Index)
	} else {
		p.Message = fmt.Sprintf("entries %d..%d are missing", p.Index, p.End-1)
	}
	c.r.add(*p)
}

// checkpointsAt checks the queued checkpoints of size n against the
// tree of the first n records.
func (c *checker) checkpointsAt(n int64) error {
	if err := c.pull(n); err != nil {
		return err
	}
	for len(c.queue) > 0 && c.queue[0].t.N <= n {
		ct := c.queue[0]
		c.queue = c.queue[1:]
		if ct.t.N < n {
			continue // cannot happen: queued before its size was passed
		}
		if c.broken >= 0 {
			c.unchecked = append(c.unchecked, n)
			continue
		}
		th, err := tlog.TreeHash(n, c.frontier)
		if err != nil {
			return fmt.Errorf("recompute tree: %w", err)
		}
		if th == ct.t.Hash {
			c.closeMismatch()
			c.matched = n
			if ct.trusted {
				c.r.TrustedOK = true
			} else {
				cp := ct.c
				c.latest = &cp
				c.r.Checkpoints++
			}
			continue
		}
		if ct.trusted {
			c.r.add(Problem{Kind: KindCheckpointMismatch, Index: c.matched, End: n, Checkpoint: n,
				Message: fmt.Sprintf("the log does not extend the trusted checkpoint of %d entries: entries before %d were changed, removed or reordered since it was signed (the history was rewritten)", n, n)})
			continue
		}
		if c.mismatch == nil {
			c.mismatch = &Problem{Kind: KindCheckpointMismatch, Index: c.matched, End: n, Checkpoint: n}
			c.mismatch.Message = fmt.Sprintf("signed checkpoint of %d entries does not match the entries: entries %d..%d were changed, removed or reordered after it was signed",
				n, c.matched, n-1)
		} else {
			c.mismatch.Message = fmt.Sprintf("signed checkpoints of %d to %d entries do not match the entries: entries %d..%d were changed, removed or reordered after the first was signed",
				c.mismatch.Checkpoint, n, c.mismatch.Index, c.mismatch.End-1)
		}
	}
	return nil
}

func (c *checker) closeMismatch() {
	if c.mismatch != nil {
		c.r.add(*c.mismatch)
		c.mismatch = nil
	}
}

// finish drains the checkpoints and fills in the report.
func (c *checker) finish() error {
	if err := c.pull(1<<63 - 1); err != nil {
		return err
	}
	c.closeMissing()
	c.closeMismatch()
	for _, ct := range c.queue {
		c.beyondLog(ct) // every checkpoint of size <= pos was checked
	}
	c.queue = nil
	if c.beyond != nil {
		// A checkpoint signed while we read is for entries appended
		// meanwhile: a log that grew since is not rolled back.
		grown := c.pos
		if c.sizeNow != nil {
			n, err := c.sizeNow()
			if err != nil {
				return err
			}
			grown = n
		}
		if grown < c.beyond.End {
			c.r.add(*c.beyond)
		} else {
			c.r.note("the log grew to %d entries while it was verified; entries from %d on were not checked", grown, c.pos)
		}
	}
	r := c.r

	// Reordering: a record whose hash is the stored leaf of another.
	wasAt := make(map[tlog.Hash]int64, len(c.leafMismatch))
	for _, m := range c.leafMismatch {
		wasAt[m.wasStored] = m.index
	}
	for _, m := range c.leafMismatch {
		if m.index < c.matched {
			// A signed checkpoint over it matches: the record is what
			// was signed, and the stored hash is what was altered.
			c.hashProblem(true, tlog.StoredHashIndex(0, m.index), m.index)
			continue
		}
		if j, ok := wasAt[m.got]; ok && j != m.index {
			r.add(Problem{Kind: KindEntryMoved, Index: m.index, End: m.index + 1, Checkpoint: -1,
				Message: fmt.Sprintf("entry %d holds the record that was appended as entry %d (entries were reordered)", m.index, j)})
			continue
		}
		r.add(Problem{Kind: KindEntryChanged, Index: m.index, End: m.index + 1, Checkpoint: -1,
			Message: fmt.Sprintf("entry %d was changed: its record no longer hashes to the hash stored when it was appended", m.index)})
	}
	if c.hashDiffer+c.hashMissing > 0 {
		r.add(Problem{Kind: KindHashes, Index: c.firstHashLeaf, End: c.firstHashLeaf + 1, Checkpoint: -1,
			Message: fmt.Sprintf("stored tree hashes: %d differ from those recomputed from the entries and %d are missing (the first at storage index %d, entry %d): the hash table was altered; the server refuses to sign new checkpoints over it",
				c.hashDiffer, c.hashMissing, c.firstHashBad, c.firstHashLeaf)})
	}
	if c.badEntries > 0 {
		r.note("%d records are not entries this version of coffer reads (the first is entry %d); they are hashed and checked like any other", c.badEntries, c.firstBadEntry)
	}
	if len(c.unchecked) > 0 {
		r.note("%d checkpoints (of %d to %d entries) could not be checked: entry %d and its stored hash are both gone, so the tree cannot be recomputed past it",
			len(c.unchecked), c.unchecked[0], c.unchecked[len(c.unchecked)-1], c.broken)
	}
	if c.trusted != nil && c.maxSigned < c.trusted.t.N {
		r.add(Problem{Kind: KindCheckpointRemoved, Index: -1, End: -1, Checkpoint: c.trusted.t.N,
			Message: fmt.Sprintf("the trusted checkpoint covers %d entries, but the newest stored checkpoint signed by the key covers %d: stored checkpoints were removed", c.trusted.t.N, c.maxSigned)})
	}

	r.Entries = c.pos
	r.signed = c.maxSigned
	r.Latest = c.latest
	if c.latest != nil {
		r.Unproven = c.pos - c.latest.Size
	} else {
		r.Unproven = c.pos
	}
	if c.broken >= 0 {
		r.Tree = tlog.Tree{N: -1}
	} else {
		th, err := tlog.TreeHash(c.pos, c.frontier)
		if err != nil {
			return fmt.Errorf("recompute tree: %w", err)
		}
		r.Tree = tlog.Tree{N: c.pos, Hash: th}
	}
	return nil
}

// verifyBatch is how many records Verify reads at a time.
const verifyBatch = 1000

// Verify checks the log in store against its signed checkpoints:
//
//   - every record is hashed again and compared with the hash stored when
//     it was appended (a changed entry; one that holds another index's
//     record is reported as moved), and indexes below the log's size
//     without a record are reported missing;
//   - the tree is recomputed from the records alone (tlog.StoredHashes,
//     tlog.TreeHash), and the stored tree hashes compared with it;
//   - every stored checkpoint must be signed by vkey, and the tree of as
//     many records as it covers must have its hash; one for more entries
//     than the log holds is a rollback, as are stored hashes beyond the
//     last entry;
//   - opts.Trusted, if given, must be extended by the log, and no newer
//     than the newest stored checkpoint;
//   - with opts.Now, entries left unsigned longer than UnprovenGrace are
//     reported.
//
// It returns an error only when it could not run (the store failed, vkey
// is not a verifier key); findings are in the Report.
func Verify(ctx context.Context, store Store, vkey string, opts VerifyOptions) (*Report, error) {
	vs, err := verifiers(vkey, opts.PreviousKeys)
	if err != nil {
		return nil, fmt.Errorf("verify audit log: %w", err)
	}
	size, err := store.AuditSize(ctx)
	if err != nil {
		return nil, fmt.Errorf("verify audit log: %w", err)
	}
	c := newChecker(vs, &storeCheckpoints{ctx: ctx, store: store})
	c.storeMode = true
	c.sizeNow = func() (int64, error) { return store.AuditSize(ctx) }
	c.setTrusted(opts.Trusted)
	if err := c.checkpointsAt(0); err != nil {
		return nil, fmt.Errorf("verify audit log: %w", err)
	}
	for c.pos < size {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := verifyStoreBatch(ctx, store, c, size); err != nil {
			return nil, fmt.Errorf("verify audit log: %w", err)
		}
	}
	// Hashes stored beyond the last entry: its successors were removed
	// but not their hashes. Unless they were appended while we read:
	// entries and their hashes are stored in one transaction, so the
	// size read after the hash covers it then.
	if end, err := hashesBeyond(ctx, store, size); err != nil {
		return nil, fmt.Errorf("verify audit log: %w", err)
	} else if end > size {
		c.r.add(Problem{Kind: KindRollback, Index: size, End: end, Checkpoint: -1,
			Message: fmt.Sprintf("tree hashes are still stored for entries %d..%d, which the log no longer holds: entries were removed from the end of the log", size, end-1)})
	}
	if err := c.finish(); err != nil {
		return nil, fmt.Errorf("verify audit log: %w", err)
	}
	if !opts.Now.IsZero() && c.r.signed < c.r.Entries {
		if err := checkUnproven(ctx, store, c.r, opts.Now); err != nil {
			return nil, fmt.Errorf("verify audit log: %w", err)
		}
	}
	c.r.sortProblems()
	return c.r, nil
}

// hashesBeyond returns how many entries the stored hashes imply, when
// that is more than size (the hashes of removed entries are still
// there), else size. Entries and their hashes are stored in one
// transaction, so hashes appended while we read are covered by the size
// read after them.
func hashesBeyond(ctx context.Context, store Store, size int64) (int64, error) {
	from := tlog.StoredHashCount(size)
	var last int64 = -1
	for {
		hs, err := store.AuditHashRange(ctx, from, verifyBatch)
		if err != nil {
			return 0, err
		}
		if len(hs) > 0 {
			last = hs[len(hs)-1].Index
			from = last + 1
		}
		if len(hs) < verifyBatch {
			break
		}
	}
	if last < 0 {
		return size, nil
	}
	now, err := store.AuditSize(ctx)
	if err != nil {
		return 0, err
	}
	if tlog.StoredHashCount(now) > last {
		return size, nil // appended while we read
	}
	// The hash at storage index last is node (l, n), which the record
	// (n+1)<<l - 1 completed.
	l, n := tlog.SplitStoredHashIndex(last)
	return (n + 1) << l, nil
}

// verifyStoreBatch feeds the checker the next records and their stored
// hashes.
func verifyStoreBatch(ctx context.Context, store Store, c *checker, size int64) error {
	from := c.pos
	recs, err := store.AuditRecords(ctx, from, verifyBatch)
	if err != nil {
		return err
	}
	end := size
	if len(recs) == verifyBatch {
		end = min(recs[len(recs)-1].Index+1, size) // appended while we read: not ours to check
	}
	lo, hi := tlog.StoredHashCount(from), tlog.StoredHashCount(end)
	stored := make([]tlog.Hash, hi-lo)
	has := make([]bool, hi-lo)
	for x := lo; x < hi; {
		hs, err := store.AuditHashRange(ctx, x, int(min(hi-x, 4*verifyBatch)))
		if err != nil {
			return err
		}
		for _, h := range hs {
			if h.Index >= lo && h.Index < hi {
				stored[h.Index-lo], has[h.Index-lo] = h.Hash, true
			}
		}
		if len(hs) == 0 || hs[len(hs)-1].Index >= hi-1 {
			break
		}
		x = hs[len(hs)-1].Index + 1
	}
	for i := from; i < end; i++ {
		var rec []byte
		present := len(recs) > 0 && recs[0].Index == i
		if present {
			rec, recs = recs[0].Data, recs[1:]
		}
		a, b := tlog.StoredHashCount(i)-lo, tlog.StoredHashCount(i+1)-lo
		if err := c.record(rec, present, stored[a:b], has[a:b]); err != nil {
			return err
		}
	}
	return nil
}

// checkUnproven reports entries after the newest signed checkpoint that
// have waited longer than UnprovenGrace. (Entries that a signed
// checkpoint covers but no longer matches are reported as mismatches.)
func checkUnproven(ctx context.Context, store Store, r *Report, now time.Time) error {
	first := r.signed
	recs, err := store.AuditRecords(ctx, first, 1)
	if err != nil {
		return err
	}
	if len(recs) == 0 || recs[0].Index != first {
		return nil // missing, reported already
	}
	e, err := ParseRecord(recs[0].Data)
	if err != nil {
		return nil // noted already
	}
	if age := now.Sub(e.Time); age > UnprovenGrace {
		r.add(Problem{Kind: KindUnproven, Index: first, End: r.Entries, Checkpoint: -1,
			Message: fmt.Sprintf("entries %d..%d are not covered by any signed checkpoint, the first for %v (the server signs within %v of an entry and when it starts): newer checkpoints were removed, or the server has not run since; until one is signed these entries prove nothing",
				first, r.Entries-1, age.Round(time.Second), CheckpointEvery)})
	}
	return nil
}

// storeCheckpoints pages through a store's checkpoints.
type storeCheckpoints struct {
	ctx   context.Context
	store Store
	buf   []Checkpoint
	from  int64
	done  bool
}

func (s *storeCheckpoints) next() (Checkpoint, bool, error) {
	const page = 1000
	if len(s.buf) == 0 && !s.done {
		cs, err := s.store.AuditCheckpoints(s.ctx, s.from, page)
		if err != nil {
			return Checkpoint{}, false, err
		}
		s.buf, s.done = cs, len(cs) < page
		if len(cs) > 0 {
			s.from = cs[len(cs)-1].Size + 1
		}
	}
	if len(s.buf) == 0 {
		return Checkpoint{}, false, nil
	}
	c := s.buf[0]
	s.buf = s.buf[1:]
	return c, true, nil
}

// sliceCheckpoints yields checkpoints from memory, sorted by size.
type sliceCheckpoints []Checkpoint

func (s *sliceCheckpoints) next() (Checkpoint, bool, error) {
	if len(*s) == 0 {
		return Checkpoint{}, false, nil
	}
	c := (*s)[0]
	*s = (*s)[1:]
	return c, true, nil
}
