package audit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/coffer-backup/coffer/internal/audit"
	"github.com/coffer-backup/coffer/internal/audit/audittest"
)

// tamperEnv is a log of 40 entries, 20 seconds apart, all signed: a
// checkpoint about every third entry.
func tamperEnv(t *testing.T) (*env, audit.Checkpoint) {
	t.Helper()
	e := newEnv(t)
	e.fill(40, 20*time.Second)
	latest, err := e.log.Checkpoint(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if latest.Size != 40 || len(e.checkpoints()) < 12 {
		t.Fatalf("test: latest checkpoint %d, %d checkpoints", latest.Size, len(e.checkpoints()))
	}
	if r := e.verify(audit.VerifyOptions{Trusted: &latest, Now: e.clock.Now()}); !r.OK() {
		t.Fatalf("untouched log: %v", r.Err())
	}
	return e, latest
}

// record returns the stored record at index i.
func (e *env) record(i int64) []byte {
	e.t.Helper()
	rs, err := e.cat.AuditRecords(e.t.Context(), i, 1)
	if err != nil || len(rs) != 1 || rs[0].Index != i {
		e.t.Fatalf("record %d: %v, %v", i, rs, err)
	}
	return rs[0].Data
}

// rehash replaces the stored hashes by those of the stored records, as
// an attacker who knows tlog would after editing entries.
func (e *env) rehash() {
	e.t.Helper()
	rs, err := e.cat.AuditRecords(e.t.Context(), 0, 1<<20)
	if err != nil {
		e.t.Fatal(err)
	}
	var recs [][]byte
	for _, r := range rs {
		recs = append(recs, r.Data)
	}
	hs, err := audittest.Hashes(e.t.Context(), audittest.NewMemStore(), 0, recs)
	if err != nil {
		e.t.Fatal(err)
	}
	e.tamper(`DELETE FROM audit_hashes`)
	for i, h := range hs {
		e.tamperArgs(`INSERT INTO audit_hashes (idx, hash) VALUES (?, ?)`, i, h[:])
	}
}

// checkpointAround returns the sizes of the newest checkpoint at or
// below i and of the oldest above it.
func (e *env) checkpointAround(i int64) (lo, hi int64) {
	for _, c := range e.checkpoints() {
		if c.Size <= i {
			lo = c.Size
		} else if hi == 0 {
			hi = c.Size
		}
	}
	return lo, hi
}

// TestTamper edits the catalog with SQL in each way someone with write
// access to the file could, and checks what Verify reports.
func TestTamper(t *testing.T) {
	t.Run("change an entry byte", func(t *testing.T) {
		e, _ := tamperEnv(t)
		rec := e.record(17)
		rec[bytes.Index(rec, []byte(`"n":"17"`))+5] = '8'
		e.tamperArgs(`UPDATE audit_entries SET record = ? WHERE idx = 17`, rec)
		r := e.verify(audit.VerifyOptions{})
		lo, hi := e.checkpointAround(17)
		if !hasProblem(r, audit.KindEntryChanged, 17, 18) || !hasProblem(r, audit.KindCheckpointMismatch, lo, hi) || len(r.Problems) != 2 {
			t.Errorf("problems %v, want entry-changed[17,18) and checkpoint-mismatch[%d,%d)", kinds(r), lo, hi)
		}
		if !errors.Is(r.Err(), audit.ErrTampered) || r.Latest == nil || r.Latest.Size != lo {
			t.Errorf("Err %v, latest matching checkpoint %+v (want %d)", r.Err(), r.Latest, lo)
		}
	})

	t.Run("delete an entry", func(t *testing.T) {
		e, latest := tamperEnv(t)
		e.tamper(`DELETE FROM audit_entries WHERE idx = 10`)
		r := e.verify(audit.VerifyOptions{Trusted: &latest})
		// Its stored hash still proves every checkpoint: exactly the
		// missing entry is reported.
		if !hasProblem(r, audit.KindEntryMissing, 10, 11) || len(r.Problems) != 1 {
			t.Errorf("problems %v, want entry-missing[10,11)", kinds(r))
		}
	})

	t.Run("delete entries and their hashes", func(t *testing.T) {
		e, _ := tamperEnv(t)
		e.tamper(`DELETE FROM audit_entries WHERE idx BETWEEN 10 AND 12`,
			fmt.Sprintf(`DELETE FROM audit_hashes WHERE idx >= %d AND idx < %d`, tlog.StoredHashCount(10), tlog.StoredHashCount(13)))
		r := e.verify(audit.VerifyOptions{})
		if !hasProblem(r, audit.KindEntryMissing, 10, 13) {
			t.Errorf("problems %v, want entry-missing[10,13)", kinds(r))
		}
		if r.OK() || r.Tree.N != -1 || !strings.Contains(strings.Join(r.Notes, "\n"), "could not be checked") {
			t.Errorf("tree %v, notes %q", r.Tree, r.Notes)
		}
	})

	t.Run("swap two entries", func(t *testing.T) {
		e, _ := tamperEnv(t)
		a, b := e.record(5), e.record(30)
		e.tamperArgs(`UPDATE audit_entries SET record = ? WHERE idx = 5`, b)
		e.tamperArgs(`UPDATE audit_entries SET record = ? WHERE idx = 30`, a)
		r := e.verify(audit.VerifyOptions{})
		lo, _ := e.checkpointAround(5)
		if !hasProblem(r, audit.KindEntryMoved, 5, 6) || !hasProblem(r, audit.KindEntryMoved, 30, 31) || !hasProblem(r, audit.KindCheckpointMismatch, lo, -2) {
			t.Errorf("problems %v, want entry-moved at 5 and 30, checkpoint-mismatch from %d", kinds(r), lo)
		}
		if !strings.Contains(r.Err().Error(), "entry 5 holds the record that was appended as entry 30") {
			t.Errorf("Err: %v", r.Err())
		}
	})

	t.Run("change an entry and recompute every hash", func(t *testing.T) {
		// The stored hashes are only a cache: an attacker can recompute
		// them. The signed checkpoints still catch it, to within the
		// entries between two checkpoints.
		e, _ := tamperEnv(t)
		rec := bytes.Replace(e.record(17), []byte(`"outcome":"ok"`), []byte(`"outcome":"denied"`), 1)
		e.tamperArgs(`UPDATE audit_entries SET record = ? WHERE idx = 17`, rec)
		e.rehash()
		r := e.verify(audit.VerifyOptions{})
		lo, hi := e.checkpointAround(17)
		if !hasProblem(r, audit.KindCheckpointMismatch, lo, hi) || len(r.Problems) != 1 {
			t.Errorf("problems %v, want checkpoint-mismatch[%d,%d) only", kinds(r), lo, hi)
		}
		// And the server refuses to sign the rewritten history.
		e.clock.Add(time.Hour)
		_, err := e.log.Append(t.Context(), entry(0))
		if !errors.Is(err, audit.ErrCheckpoint) || !strings.Contains(err.Error(), "refusing to sign") {
			t.Errorf("Append after the rewrite: %v, want a refused checkpoint", err)
		}
		if c, _ := e.cat.LatestAuditCheckpoint(t.Context()); c.Size != 40 {
			t.Errorf("a checkpoint of %d entries was signed over the rewritten log", c.Size)
		}
	})

	t.Run("rollback", func(t *testing.T) {
		// Remove the newest entries, their hashes and the checkpoints
		// over them: what is left is exactly the log as it was earlier.
		e, latest := tamperEnv(t)
		cps := e.checkpoints()
		back := cps[len(cps)/2].Size
		e.tamper(fmt.Sprintf(`DELETE FROM audit_entries WHERE idx >= %d`, back),
			fmt.Sprintf(`DELETE FROM audit_hashes WHERE idx >= %d`, tlog.StoredHashCount(back)),
			fmt.Sprintf(`DELETE FROM audit_checkpoints WHERE size > %d`, back))

		// Without a trusted checkpoint nothing inside the catalog can
		// tell: the log is one the server did sign. Verify says what it
		// could not check.
		r := e.verify(audit.VerifyOptions{Now: e.clock.Now()})
		if !r.OK() || r.Entries != back || r.Unproven != 0 {
			t.Errorf("without a trusted checkpoint: %v, %d entries, %d unproven", r.Err(), r.Entries, r.Unproven)
		}
		if !strings.Contains(strings.Join(r.Notes, "\n"), "no trusted checkpoint given") {
			t.Errorf("notes %q do not say that a rollback cannot be seen", r.Notes)
		}
		// With the checkpoint an auditor kept, it is plain.
		r = e.verify(audit.VerifyOptions{Trusted: &latest})
		if !hasProblem(r, audit.KindRollback, back, 40) || !hasProblem(r, audit.KindCheckpointRemoved, -1, -1) {
			t.Errorf("with the trusted checkpoint: problems %v, want rollback[%d,40) and checkpoint-removed", kinds(r), back)
		}
		// An older trusted checkpoint, still inside the log, is fine.
		older := cps[len(cps)/4]
		if r := e.verify(audit.VerifyOptions{Trusted: &older}); !r.OK() || !r.TrustedOK {
			t.Errorf("with an older trusted checkpoint: %v", r.Err())
		}
	})

	t.Run("delete the newest entries only", func(t *testing.T) {
		e, _ := tamperEnv(t)
		e.tamper(`DELETE FROM audit_entries WHERE idx >= 33`)
		r := e.verify(audit.VerifyOptions{})
		if n := len(r.Problems); !hasProblem(r, audit.KindRollback, 33, 40) || n != 2 {
			t.Errorf("problems %v, want rollback by the checkpoints [33,40) and by the hashes left behind", kinds(r))
		}
	})

	t.Run("forge a checkpoint", func(t *testing.T) {
		e, _ := tamperEnv(t)
		forged := forge(t, tlog.Tree{N: 50})
		e.tamperArgs(`INSERT INTO audit_checkpoints (size, note, time) VALUES (50, ?, 0)`, forged)
		// And replace the note of an existing one by a forgery of the
		// same tree.
		c := e.checkpoints()[3]
		tree, err := audit.OpenCheckpoint(c, e.vkey)
		if err != nil {
			t.Fatal(err)
		}
		e.tamperArgs(`UPDATE audit_checkpoints SET note = ? WHERE size = ?`, forge(t, tree), c.Size)
		r := e.verify(audit.VerifyOptions{})
		var forgedSizes []int64
		for _, p := range r.Problems {
			if p.Kind == audit.KindSignature && strings.Contains(p.Message, "not signed by the audit key") {
				forgedSizes = append(forgedSizes, p.Checkpoint)
			}
		}
		if !slices.Equal(forgedSizes, []int64{c.Size, 50}) || len(r.Problems) != 2 {
			t.Errorf("problems %v (%q), want the two forged checkpoints", kinds(r), r.Problems)
		}
	})

	t.Run("re-sign a rewritten log with another key", func(t *testing.T) {
		// The attacker edits an entry, recomputes the hashes and replaces
		// every checkpoint by its own.
		e, latest := tamperEnv(t)
		rec := bytes.Replace(e.record(3), []byte(`"outcome":"ok"`), []byte(`"outcome":"failed"`), 1)
		e.tamperArgs(`UPDATE audit_entries SET record = ? WHERE idx = 3`, rec)
		e.rehash()
		cps := e.checkpoints()
		e.tamper(`DELETE FROM audit_checkpoints`)
		for _, c := range cps {
			th, err := tlog.TreeHash(c.Size, tlog.HashReaderFunc(func(xs []int64) ([]tlog.Hash, error) { return e.cat.AuditHashes(t.Context(), xs) }))
			if err != nil {
				t.Fatal(err)
			}
			e.tamperArgs(`INSERT INTO audit_checkpoints (size, note, time) VALUES (?, ?, ?)`, c.Size, forge(t, tlog.Tree{N: c.Size, Hash: th}), c.Time.UnixNano())
		}
		r := e.verify(audit.VerifyOptions{Now: e.clock.Now()})
		signature := 0
		for _, p := range r.Problems {
			if p.Kind == audit.KindSignature {
				signature++
			}
		}
		if signature != len(cps) || !hasProblem(r, audit.KindUnproven, 0, 40) || r.Latest != nil {
			t.Errorf("problems %v, want %d invalid checkpoints and all 40 entries unproven", kinds(r), len(cps))
		}
		r = e.verify(audit.VerifyOptions{Trusted: &latest})
		if !hasProblem(r, audit.KindCheckpointMismatch, 0, 40) {
			t.Errorf("with the trusted checkpoint: problems %v, want it not extended", kinds(r))
		}
	})

	t.Run("truncate checkpoints", func(t *testing.T) {
		e, latest := tamperEnv(t)
		e.tamper(`DELETE FROM audit_checkpoints WHERE size > 10`)
		lo, _ := e.checkpointAround(10)

		// Nothing proves the tail any more; without a clock or a trusted
		// checkpoint that alone is no proof of tampering (a server that
		// just appended looks the same), but the report says so.
		r := e.verify(audit.VerifyOptions{})
		if !r.OK() || r.Unproven != 40-lo {
			t.Errorf("without clock or trusted checkpoint: %v, %d unproven (want %d)", r.Err(), r.Unproven, 40-lo)
		}
		// The tail is minutes old: the server would have signed it.
		r = e.verify(audit.VerifyOptions{Now: e.clock.Now()})
		if !hasProblem(r, audit.KindUnproven, lo, 40) || len(r.Problems) != 1 {
			t.Errorf("with the clock: problems %v, want unproven[%d,40)", kinds(r), lo)
		}
		r = e.verify(audit.VerifyOptions{Trusted: &latest})
		if !hasProblem(r, audit.KindCheckpointRemoved, -1, -1) || len(r.Problems) != 1 {
			t.Errorf("with the trusted checkpoint: problems %v, want checkpoint-removed", kinds(r))
		}
	})

	t.Run("move a checkpoint", func(t *testing.T) {
		e, _ := tamperEnv(t)
		e.tamper(`UPDATE audit_checkpoints SET size = 1000 WHERE size = 40`)
		r := e.verify(audit.VerifyOptions{})
		if !hasProblem(r, audit.KindSignature, -1, -1) || !strings.Contains(r.Problems[0].Message, "note is for 40 entries, recorded as a checkpoint of 1000") {
			t.Errorf("problems %q", r.Problems)
		}
	})

	t.Run("change a stored tree hash", func(t *testing.T) {
		e, _ := tamperEnv(t)
		x := tlog.StoredHashIndex(2, 3) // the node over entries 12..15
		e.tamperArgs(`UPDATE audit_hashes SET hash = ? WHERE idx = ?`, bytes.Repeat([]byte{7}, 32), x)
		r := e.verify(audit.VerifyOptions{})
		if len(r.Problems) != 1 || r.Problems[0].Kind != audit.KindHashes || !strings.Contains(r.Problems[0].Message, fmt.Sprintf("storage index %d", x)) {
			t.Errorf("problems %q, want one stored-hashes naming index %d", r.Problems, x)
		}
	})

	t.Run("change a stored leaf hash", func(t *testing.T) {
		// The entry is intact (the checkpoints over it match): the hash
		// table, not the entry, is reported.
		e, _ := tamperEnv(t)
		e.tamperArgs(`UPDATE audit_hashes SET hash = ? WHERE idx = ?`, bytes.Repeat([]byte{9}, 32), tlog.StoredHashIndex(0, 20))
		r := e.verify(audit.VerifyOptions{})
		if len(r.Problems) != 1 || r.Problems[0].Kind != audit.KindHashes || r.Problems[0].Index != 20 {
			t.Errorf("problems %q, want one stored-hashes at entry 20", r.Problems)
		}
	})

	t.Run("append an entry without the server", func(t *testing.T) {
		// A forged entry appended with correct hashes is not signed: it
		// shows as unproven, and once old enough, as a problem.
		e, _ := tamperEnv(t)
		x := entry(99)
		x.Time = e.clock.Now().Add(-time.Hour)
		rec, err := x.MarshalRecord()
		if err != nil {
			t.Fatal(err)
		}
		// Through a second handle, not the Log: no checkpoint is signed.
		other := e.openCatalog()
		audittest.Append(t, other, [][]byte{rec})
		r := e.verify(audit.VerifyOptions{})
		if !r.OK() || r.Unproven != 1 {
			t.Errorf("without clock: %v, %d unproven", r.Err(), r.Unproven)
		}
		r = e.verify(audit.VerifyOptions{Now: e.clock.Now()})
		if !hasProblem(r, audit.KindUnproven, 40, 41) {
			t.Errorf("with the clock: problems %v, want unproven[40,41)", kinds(r))
		}
	})
}

// TestVerifyConcurrentGrowth: a log that grows while it is verified is
// not mistaken for a rollback.
func TestVerifyConcurrentGrowth(t *testing.T) {
	e := newEnv(t)
	e.fill(50, 10*time.Second)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil; i++ {
			e.clock.Add(time.Minute) // every entry signed at once
			if _, err := e.log.Append(ctx, entry(i)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for range 20 {
		r := e.verify(audit.VerifyOptions{})
		if !r.OK() {
			t.Errorf("verify while appending: %v", r.Err())
			break
		}
	}
	cancel()
	<-done
}

// TestVerifyLarge checks a log over several read batches and tree
// levels, with a damaged entry deep inside.
func TestVerifyLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	e := newEnv(t)
	const n = 2500
	e.fill(n, 3*time.Second)
	if _, err := e.log.Checkpoint(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r := e.verify(audit.VerifyOptions{Now: e.clock.Now()}); !r.OK() || r.Entries != n {
		t.Fatalf("verify: %v", r.Err())
	}
	rec := e.record(2222)
	rec[len(rec)-3] ^= 1
	e.tamperArgs(`UPDATE audit_entries SET record = ? WHERE idx = 2222`, rec)
	r := e.verify(audit.VerifyOptions{})
	lo, hi := e.checkpointAround(2222)
	if !hasProblem(r, audit.KindEntryChanged, 2222, 2223) || !hasProblem(r, audit.KindCheckpointMismatch, lo, hi) || len(r.Problems) != 2 {
		t.Errorf("problems %v, want entry-changed[2222,2223) and checkpoint-mismatch[%d,%d)", kinds(r), lo, hi)
	}
}

// TestFrontier checks the verifier's O(log n) tree state against tlog's
// own computation from the full hash table: checkpoints at the sizes
// around powers of two and at random sizes must all match.
func TestFrontier(t *testing.T) {
	s := audittest.NewMemStore()
	const n = 700
	audittest.Append(t, s, audittest.Records(0, n))
	all := tlog.HashReaderFunc(func(xs []int64) ([]tlog.Hash, error) { return s.AuditHashes(context.Background(), xs) })
	sizes := []int64{1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 63, 64, 65, 255, 256, 257, 511, 512, 513, n - 1, n}
	for range 30 {
		sizes = append(sizes, rand.Int64N(n)+1)
	}
	signer, vkey, err := audit.LoadOrCreateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range sizes {
		th, err := tlog.TreeHash(size, all)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := note.Sign(&note.Note{Text: string(tlog.FormatTree(tlog.Tree{N: size, Hash: th}))}, signer)
		if err != nil {
			t.Fatal(err)
		}
		err = s.AddAuditCheckpoint(t.Context(), audit.Checkpoint{Size: size, Note: string(msg), Time: time.Unix(0, 0)})
		if err != nil && !errors.Is(err, audit.ErrExists) {
			t.Fatal(err)
		}
	}
	r, err := audit.Verify(t.Context(), s, vkey, audit.VerifyOptions{})
	if err != nil || !r.OK() {
		t.Fatalf("verify: %v, %v", err, r.Err())
	}
	cs, _ := s.AuditCheckpoints(t.Context(), 0, 1000)
	if r.Checkpoints != len(cs) || r.Tree.N != n {
		t.Errorf("%d of %d checkpoints matched, tree of %d", r.Checkpoints, len(cs), r.Tree.N)
	}
}
