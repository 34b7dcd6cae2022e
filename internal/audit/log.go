package audit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// CheckpointEvery is the longest a stored entry waits for a signed
// checkpoint while entries arrive: Append writes one when the last is at
// least this old, and Run every this often.
const CheckpointEvery = time.Minute

// maxAppendAttempts bounds the retries of an append that another process
// overtook (ErrConflict).
const maxAppendAttempts = 20

// Config is what Open needs.
type Config struct {
	Store       Store
	Signer      note.Signer      // signs checkpoints (LoadOrCreateKey)
	VerifierKey string           // the signer's public key
	Now         func() time.Time // the clock
}

// Log appends entries to a Store and signs checkpoints of it. It is safe
// for concurrent use; several Logs (processes) may append to one store.
type Log struct {
	store    Store
	signer   note.Signer
	verifier note.Verifiers
	now      func() time.Time

	mu    sync.Mutex // guards queue
	queue []*pending // entries waiting for the writer

	// writer is held by the goroutine writing a batch (group commit:
	// entries queued meanwhile go in the next batch, in one transaction)
	// or a checkpoint. It guards the fields below.
	writer   sync.Mutex
	lastTime time.Time  // when the latest checkpoint this Log knows was written
	base     tlog.Tree  // the latest checkpoint that verifies, N 0 when none
	baseNote Checkpoint // base's stored form
}

type pending struct {
	record []byte
	done   chan struct{}
	index  int64
	err    error
}

// Open returns a Log writing to cfg.Store. It fails with ErrKeyMismatch
// if the store has checkpoints and none verifies with cfg.VerifierKey
// (the signing key was replaced: a new key would sign a history it cannot
// vouch for). If entries are not covered by the latest checkpoint (the
// last run stopped before signing them), Open signs a checkpoint at once.
func Open(ctx context.Context, cfg Config) (*Log, error) {
	if cfg.Store == nil || cfg.Signer == nil || cfg.Now == nil {
		return nil, errors.New("open audit log: store, signer and clock must be set")
	}
	if err := checkPair(cfg.Signer, cfg.VerifierKey); err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	v, _ := note.NewVerifier(cfg.VerifierKey) // checkPair parsed it
	l := &Log{store: cfg.Store, signer: cfg.Signer, verifier: note.VerifierList(v), now: cfg.Now}
	l.writer.Lock()
	defer l.writer.Unlock()
	if err := l.loadBase(ctx); err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	if _, err := l.checkpoint(ctx); err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	return l, nil
}

// loadBase finds the latest stored checkpoint that verifies. Forged or
// damaged ones are skipped here (Verify reports them); if there are
// checkpoints but none verifies, the key is not the log's.
func (l *Log) loadBase(ctx context.Context) error {
	latest, err := l.store.LatestAuditCheckpoint(ctx)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	t, err := openCheckpoint(latest, l.verifier)
	if err == nil {
		l.base, l.baseNote, l.lastTime = t, latest, latest.Time
		return nil
	}
	// The latest is forged or damaged (Verify reports it): fall back to
	// the newest one that verifies, if any does.
	firstErr := fmt.Errorf("checkpoint of %d entries: %w", latest.Size, err)
	const page = 1000
	for from := int64(0); ; {
		cs, err := l.store.AuditCheckpoints(ctx, from, page)
		if err != nil {
			return err
		}
		for _, c := range cs {
			if t, err := openCheckpoint(c, l.verifier); err == nil {
				l.base, l.baseNote, l.lastTime = t, c, c.Time
			}
		}
		if len(cs) < page {
			break
		}
		from = cs[len(cs)-1].Size + 1
	}
	if l.base.N > 0 {
		return nil
	}
	return fmt.Errorf("%w: no stored checkpoint verifies with %s (%v); restore the audit key files that signed them, and run coffer audit verify",
		ErrKeyMismatch, l.verifierName(), firstErr)
}

func (l *Log) verifierName() string {
	return fmt.Sprintf("%s+%08x", l.signer.Name(), l.signer.KeyHash())
}

// Append stores e and returns its index in the log. e is scrubbed first
// (Scrub; long fields truncated) and its Time set to the clock's when
// zero. It returns once the entry is durable. Entries appended
// concurrently are written together in one transaction.
//
// Append does not give up when ctx is cancelled: an audited request
// whose client went away is still recorded. Only ctx's values are used.
//
// When a checkpoint is due (the last is CheckpointEvery old) Append
// writes it; if that fails, Append returns the entry's index and an
// error wrapping ErrCheckpoint: the entry is stored but not yet signed.
func (l *Log) Append(ctx context.Context, e Entry) (int64, error) {
	ctx = context.WithoutCancel(ctx) // see above: an audit record is not optional
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	rec, err := clean(e).MarshalRecord()
	if err != nil {
		return -1, err
	}
	p := &pending{record: rec, done: make(chan struct{})}
	l.mu.Lock()
	l.queue = append(l.queue, p)
	l.mu.Unlock()

	l.writer.Lock()
	defer l.writer.Unlock()
	select {
	case <-p.done: // written by the batch of whoever held the writer
		return p.index, p.err
	default:
	}
	l.mu.Lock()
	batch := l.queue
	l.queue = nil
	l.mu.Unlock()

	err = l.write(ctx, batch)
	if err == nil && !l.now().Before(l.lastTime.Add(CheckpointEvery)) {
		if _, cerr := l.checkpoint(ctx); cerr != nil {
			err = fmt.Errorf("%w: %w", ErrCheckpoint, cerr)
		}
	}
	for _, q := range batch {
		if q.err == nil {
			q.err = err // a checkpoint failure concerns the whole batch
		}
		close(q.done)
	}
	return p.index, p.err
}

// write appends batch's records, setting each one's index (or err).
// The caller holds l.writer.
func (l *Log) write(ctx context.Context, batch []*pending) error {
	records := make([][]byte, len(batch))
	for i, p := range batch {
		records[i] = p.record
	}
	var err error
	for range maxAppendAttempts {
		var start int64
		start, err = l.store.AuditSize(ctx)
		if err != nil {
			break
		}
		var hashes []tlog.Hash
		hashes, err = storedHashes(ctx, l.store, start, records)
		if err != nil {
			break
		}
		err = l.store.AppendAudit(ctx, start, records, hashes)
		if errors.Is(err, ErrConflict) {
			continue // another process appended in between: recompute
		}
		if err == nil {
			for i, p := range batch {
				p.index = start + int64(i)
			}
			return nil
		}
		break
	}
	err = fmt.Errorf("append audit entries: %w", err)
	for _, p := range batch {
		p.index, p.err = -1, err
	}
	return err
}

// storedHashes returns the hashes to store for records appended at
// indexes start…: tlog.StoredHashes of each, reading the earlier ones
// from the store or from those computed for the records before it.
func storedHashes(ctx context.Context, s Store, start int64, records [][]byte) ([]tlog.Hash, error) {
	stored := tlog.StoredHashCount(start)
	var out []tlog.Hash
	r := tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		hs := make([]tlog.Hash, len(indexes))
		var old []int64
		for _, x := range indexes {
			if x < stored {
				old = append(old, x)
			}
		}
		got, err := s.AuditHashes(ctx, old)
		if err != nil {
			return nil, err
		}
		for i, x := range indexes {
			if x < stored {
				hs[i], got = got[0], got[1:]
			} else if x-stored < int64(len(out)) {
				hs[i] = out[x-stored]
			} else {
				return nil, fmt.Errorf("hash %d not computed yet", x)
			}
		}
		return hs, nil
	})
	for i, rec := range records {
		hs, err := tlog.StoredHashes(start+int64(i), rec, r)
		if err != nil {
			return nil, err
		}
		out = append(out, hs...)
	}
	return out, nil
}

// Checkpoint signs and stores a checkpoint of the whole log if it grew
// since the latest one, and returns the latest checkpoint (Size 0 when
// the log is empty). It refuses, with an error, to sign a log that does
// not extend the latest valid checkpoint (entries were changed or
// removed): the server must not vouch for a rewritten history.
func (l *Log) Checkpoint(ctx context.Context) (Checkpoint, error) {
	l.writer.Lock()
	defer l.writer.Unlock()
	return l.checkpoint(ctx)
}

func (l *Log) checkpoint(ctx context.Context) (Checkpoint, error) {
	now := l.now()
	n, err := l.store.AuditSize(ctx)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint: %w", err)
	}
	// Another process may have signed a newer one.
	if latest, err := l.store.LatestAuditCheckpoint(ctx); err == nil && latest.Size > l.base.N && latest.Size <= n {
		if t, err := openCheckpoint(latest, l.verifier); err == nil {
			if err := l.extends(ctx, t); err != nil {
				return Checkpoint{}, err
			}
			l.base, l.baseNote, l.lastTime = t, latest, latest.Time
		}
	} else if err != nil && !errors.Is(err, ErrNotFound) {
		return Checkpoint{}, fmt.Errorf("checkpoint: %w", err)
	}
	if n < l.base.N {
		return Checkpoint{}, fmt.Errorf("checkpoint: the log holds %d entries but checkpoint %d is signed: entries were removed; run coffer audit verify", n, l.base.N)
	}
	if n == l.base.N {
		// Nothing new to sign. lastTime stays: after a pause, the next
		// entry is signed at once.
		return l.baseNote, nil
	}
	th, err := tlog.TreeHash(n, hashReader{ctx, l.store})
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint: %w", err)
	}
	t := tlog.Tree{N: n, Hash: th}
	if err := l.extends(ctx, t); err != nil {
		return Checkpoint{}, err
	}
	msg, err := note.Sign(&note.Note{Text: string(tlog.FormatTree(t))}, l.signer)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint: sign: %w", err)
	}
	c := Checkpoint{Size: n, Note: string(msg), Time: now}
	err = l.store.AddAuditCheckpoint(ctx, c)
	if errors.Is(err, ErrExists) {
		// Another process signed the same size: ed25519 signatures are
		// deterministic, so theirs equals ours unless the trees differ,
		// which verification reports.
		err = nil
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint: %w", err)
	}
	l.base, l.baseNote, l.lastTime = t, c, now
	return c, nil
}

// extends checks that tree t contains the base checkpoint as a prefix,
// by a consistency proof from the stored hashes checked against base's
// signed hash: altered stored hashes cannot make it pass.
func (l *Log) extends(ctx context.Context, t tlog.Tree) error {
	if l.base.N == 0 || t.N == l.base.N && t.Hash == l.base.Hash {
		return nil
	}
	if t.N < l.base.N {
		return fmt.Errorf("checkpoint: tree of %d entries is older than checkpoint %d", t.N, l.base.N)
	}
	p, err := tlog.ProveTree(t.N, l.base.N, hashReader{ctx, l.store})
	if err == nil {
		err = tlog.CheckTree(p, t.N, t.Hash, l.base.N, l.base.Hash)
	}
	if err != nil {
		return fmt.Errorf("checkpoint: refusing to sign: the log of %d entries does not extend signed checkpoint %d (%v): stored entries were changed or removed; run coffer audit verify",
			t.N, l.base.N, err)
	}
	return nil
}

// Run writes a checkpoint every interval (at most CheckpointEvery) when
// the log grew, until ctx is done; then it writes a last one, so that a
// clean shutdown leaves every entry signed. It returns the first error:
// treat it as the audit log failing.
func (l *Log) Run(ctx context.Context, every time.Duration) error {
	if every <= 0 || every > CheckpointEvery {
		every = CheckpointEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	// Checkpoints run to completion (the store's timeouts bound them):
	// stopping must not turn one into a failure, nor skip the last.
	wctx := context.WithoutCancel(ctx)
	for {
		select {
		case <-ctx.Done():
			_, err := l.Checkpoint(wctx)
			return err
		case <-t.C:
			if _, err := l.Checkpoint(wctx); err != nil {
				return err
			}
		}
	}
}
