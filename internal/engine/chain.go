package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// This file holds the snapshot chain (docs/format.md §8.1–§8.3): every
// change to the snapshot list is a MAC'd, numbered entry, so that the
// plaintext catalog cannot reorder, edit, hide or roll back snapshots
// without the vault noticing.

// ChainPin remembers the newest snapshot-chain entry a verifier has seen
// of a vault (docs/format.md §8.2, rule 6), somewhere the vault's store
// and catalog writers cannot reach: a later chain shorter than it, or
// with another MAC there, was rolled back.
type ChainPin interface {
	// Load returns the pinned entry number and MAC of vault; ok is false
	// when nothing is pinned yet.
	Load(vault vault.ID) (seq uint64, mac [32]byte, ok bool, err error)
	// Save pins entry seq with MAC mac, replacing an older pin (or a
	// newer one: AcceptRollback); seq 0 forgets the pin.
	Save(vault vault.ID, seq uint64, mac [32]byte) error
}

// ChainHead is the newest entry of a verified chain.
type ChainHead struct {
	Seq uint64
	MAC [32]byte
}

// chainState is what the chain says of one snapshot.
type chainState struct {
	first     vault.ChainEntry // its add, import or import-forgotten entry
	forgotten bool
	removed   bool
	last      vault.ChainEntry // the entry that left it in this state
}

// chainReport is the outcome of verifying the chain against the
// catalog's records.
type chainReport struct {
	problems []string
	states   map[vault.ID]*chainState
	verified []vault.ChainEntry // the entries whose MACs verify (a prefix)
	macs     []([32]byte)       // macs[i] = h[i]; macs[0] is zero
}

func (r *chainReport) add(format string, a ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, a...))
}

// verifyChain checks entries and rows by rules 1–5 of docs/format.md
// §8.2. describe, when set, is asked to name what differs in a record
// whose digest does not match (it reads the sealed object).
func (v *Vault) verifyChain(ks *keyState, entries []vault.ChainEntry, rows []vault.SnapshotRecord, describe func(vault.SnapshotRecord) string) *chainReport {
	r := &chainReport{states: map[vault.ID]*chainState{}, macs: make([][32]byte, 1, len(entries)+1)}
	if len(entries) == 0 && len(rows) > 0 {
		// Open imports a format 1 vault's list before its keyring becomes
		// format 2; a format 2 vault's chain is never imported again.
		r.add("snapshot chain: the catalog holds %d snapshot records but no snapshot chain: the chain was deleted from the catalog (restore the catalog from a copy you trust)", len(rows))
	}
	mac := format.NewChainMAC(ks.chain, v.rec.ID)
	// Rule 1: numbered 1, 2, … and each MAC verifies.
	for i, e := range entries {
		if e.Seq != uint64(i+1) {
			r.add("snapshot chain: entry %d follows entry %d: entries are missing or were renumbered (the snapshot list was altered outside coffer)", e.Seq, i)
			break
		}
		if !format.ValidChainKind(e.Kind) || !mac.Verify(r.macs[i], e) {
			r.add("snapshot chain: entry %d (%s of snapshot %s) does not verify: it was altered or forged (entries from %d on prove nothing)", e.Seq, e.Kind, e.Snapshot.Short(), e.Seq)
			break
		}
		r.macs = append(r.macs, e.MAC)
		r.verified = append(r.verified, e)
	}
	// Rule 2: each snapshot's entries follow its states.
	for _, e := range r.verified {
		if e.Kind == vault.ChainSettings {
			// Not about a snapshot: the settings' entries (§8.4), which
			// Settings checks against the catalog's row.
			if !e.Snapshot.IsZero() {
				r.add("snapshot chain: entry %d (settings) names snapshot %s", e.Seq, e.Snapshot.Short())
			}
			continue
		}
		st := r.states[e.Snapshot]
		bad := false
		switch e.Kind {
		case vault.ChainAdd, vault.ChainImport, vault.ChainImportForgotten, vault.ChainRecover:
			if st != nil {
				bad = true
				break
			}
			st = &chainState{first: e, forgotten: e.Kind == vault.ChainImportForgotten}
			r.states[e.Snapshot] = st
		case vault.ChainForget:
			bad = st == nil || st.removed || st.forgotten
			if !bad {
				st.forgotten = true
			}
		case vault.ChainUndelete:
			bad = st == nil || st.removed || !st.forgotten
			if !bad {
				st.forgotten = false
			}
		case vault.ChainRemove:
			bad = st == nil || st.removed || !st.forgotten
			if !bad {
				st.removed = true
			}
		}
		if bad {
			r.add("snapshot chain: entry %d (%s of snapshot %s) does not follow the snapshot's earlier entries", e.Seq, e.Kind, e.Snapshot.Short())
			continue
		}
		st.last = e
	}
	// Rules 3–5: the records.
	inRows := map[vault.ID]bool{}
	for _, s := range rows {
		inRows[s.ID] = true
		st := r.states[s.ID]
		switch {
		case st == nil:
			r.add("snapshot %s (%s, host %q) is in the catalog but the vault never recorded it: it was added outside coffer", s.ID.Short(), s.Time.UTC().Format(time.RFC3339), s.Host)
			continue
		case st.removed:
			r.add("snapshot %s was removed by prune (chain entry %d) but is back in the catalog", s.ID.Short(), st.last.Seq)
			continue
		}
		if format.SnapshotDigest(s) != st.first.Digest {
			what := "its time, host, paths, tags, root tree, parent or statistics"
			if describe != nil {
				if d := describe(s); d != "" {
					what = d
				}
			}
			r.add("snapshot %s: the catalog's record was altered, it is not what the vault recorded at chain entry %d: %s", s.ID.Short(), st.first.Seq, what)
		}
		switch {
		case st.forgotten && s.Deleted.IsZero():
			r.add("snapshot %s: forgotten at chain entry %d, but the catalog lists it as live: its soft deletion was undone outside coffer", s.ID.Short(), st.last.Seq)
		case !st.forgotten && !s.Deleted.IsZero():
			r.add("snapshot %s: the catalog marks it forgotten (%s), but the vault recorded no such forget: it was hidden outside coffer", s.ID.Short(), s.Deleted.UTC().Format(time.RFC3339))
		case st.forgotten && (!s.Deleted.Equal(st.last.Time) || s.DeletedBy != st.last.Principal):
			r.add("snapshot %s: the catalog's soft-delete time or author (%s by %q) differ from chain entry %d (%s by %q)", s.ID.Short(),
				s.Deleted.UTC().Format(time.RFC3339Nano), s.DeletedBy, st.last.Seq, st.last.Time.UTC().Format(time.RFC3339Nano), st.last.Principal)
		}
	}
	for _, e := range r.verified {
		st := r.states[e.Snapshot]
		if st == nil {
			continue // a settings entry
		}
		if st.first.Seq == e.Seq && !st.removed && !inRows[e.Snapshot] {
			r.add("snapshot %s, recorded at chain entry %d, is missing from the catalog: it was deleted outside coffer", e.Snapshot.Short(), e.Seq)
		}
	}
	return r
}

// head returns the newest verified entry.
func (r *chainReport) head() ChainHead {
	n := len(r.verified)
	return ChainHead{Seq: uint64(n), MAC: r.macs[n]}
}

// loadPin returns this machine's pin of the vault's chain, zero when
// there is none (or no pin is kept).
//
// SECURITY: a verifier loads the pin before it reads the chain it checks
// against it, never after. The pin only ever names an entry that was
// committed before the pin was written, and entries are only appended,
// so a pin loaded first names an entry that any read of the chain begun
// after it must hold: a shorter or different chain is a rollback. A pin
// loaded after the read may name an entry another process (a second
// backup, on this machine) appended and pinned in between, which the
// older read cannot hold: that is a race, not a rollback, and it must not
// fail the vault. Entries pinned after the pin was loaded are checked by
// the next verification.
func (v *Vault) loadPin() (ChainHead, error) {
	if v.opt.Pin == nil {
		return ChainHead{}, nil
	}
	seq, mac, ok, err := v.opt.Pin.Load(v.rec.ID)
	if err != nil {
		return ChainHead{}, fmt.Errorf("snapshot chain: read the pin of what this machine saw before: %w", err)
	}
	if !ok {
		return ChainHead{}, nil
	}
	return ChainHead{Seq: seq, MAC: mac}, nil
}

// checkPin applies rule 6 against pin, what loadPin returned (pinErr its
// error) before the chain that r verified was read.
func (v *Vault) checkPin(r *chainReport, pin ChainHead, pinErr error) {
	if pinErr != nil {
		r.add("%v", pinErr)
		return
	}
	switch {
	case pin.Seq == 0:
	case pin.Seq > uint64(len(r.verified)):
		r.add("snapshot chain: this machine saw %d entries of the vault's snapshot list before, but it now proves only %d: entries were removed (the snapshot list was rolled back)%s", pin.Seq, len(r.verified), rollbackHint)
	case r.macs[pin.Seq] != pin.MAC:
		r.add("snapshot chain: entry %d differs from the one this machine saw before: the snapshot list was rewritten%s", pin.Seq, rollbackHint)
	}
}

// pinnedPrefix checks, before an append, that the chain extends this
// machine's pin (rule 6): an append to a chain that was rolled back or
// rewritten would otherwise carry it past the pin's entry number, and the
// pin would move to the forked chain, burying the rollback. It returns
// the pin (zero when there is none).
func (v *Vault) pinnedPrefix(ctx context.Context, ks *keyState) (ChainHead, error) {
	pin, err := v.loadPin() // before the chain is read (loadPin)
	if err != nil || pin.Seq == 0 {
		return ChainHead{}, err
	}
	seq := pin.Seq
	entries, _, err := v.opt.Catalog.SnapshotChain(ctx, v.rec.ID)
	if err != nil {
		return ChainHead{}, err
	}
	mac := format.NewChainMAC(ks.chain, v.rec.ID)
	var h [32]byte
	n := uint64(0)
	for i, e := range entries {
		if uint64(i) == seq || e.Seq != uint64(i+1) || !format.ValidChainKind(e.Kind) || !mac.Verify(h, e) {
			break
		}
		h, n = e.MAC, e.Seq
	}
	if err := pin.extendedBy(ChainHead{Seq: n, MAC: h}); err != nil {
		return ChainHead{}, err
	}
	return pin, nil
}

// extendedBy refuses an append after head, the newest entry of a chain
// whose first pin.Seq entries verify, when that chain does not reach or
// does not match the pin.
func (pin ChainHead) extendedBy(head ChainHead) error {
	switch {
	case pin.Seq == 0:
		return nil
	case head.Seq < pin.Seq:
		return fmt.Errorf("%w: snapshot chain: this machine saw %d entries of the vault's snapshot list before, but it now proves only %d: entries were removed (the snapshot list was rolled back); nothing was recorded%s", vault.ErrCorrupt, pin.Seq, head.Seq, rollbackHint)
	case head.Seq == pin.Seq && head.MAC != pin.MAC:
		return fmt.Errorf("%w: snapshot chain: entry %d differs from the one this machine saw before: the snapshot list was rewritten; nothing was recorded%s", vault.ErrCorrupt, pin.Seq, rollbackHint)
	}
	return nil
}

// rollbackHint ends the messages of a pin the chain no longer extends:
// the pin is the only record of what was lost, so only an explicit
// command moves it back.
const rollbackHint = ". If you restored an older copy of this vault on purpose, run coffer vault accept-rollback to accept that these snapshots are gone (it prints what is lost and pins the vault's list as it is now); otherwise someone rolled the vault back: run coffer check and do not accept it"

// Rollback describes what accepting a rolled-back or rewritten snapshot
// list loses against this machine's pin.
type Rollback struct {
	// Pinned is the entry number this machine saw before (0: no pin);
	// Head is the newest entry the vault's list proves now.
	Pinned, Head uint64
	// Rewritten is set when the list proves the pin's entry number but
	// with another entry there: entries up to Pinned were replaced.
	Rewritten bool
}

// Lost is how many entries the pin saw that the list no longer holds.
func (r Rollback) Lost() uint64 {
	if r.Head >= r.Pinned {
		return 0
	}
	return r.Pinned - r.Head
}

// Accepted reports whether there was anything to accept.
func (r Rollback) Accepted() bool { return r.Rewritten || r.Head < r.Pinned }

// AcceptRollback re-pins this machine's view of the snapshot list at the
// list's head as it is now, after a deliberate restore of an older copy
// of the vault: the list must verify by itself (every rule but the pin),
// so a list that was tampered with otherwise is still refused. It
// returns what the pin saw that the list no longer holds.
func (v *Vault) AcceptRollback(ctx context.Context) (Rollback, error) {
	if v.opt.Pin == nil {
		return Rollback{}, errors.New("this vault keeps no snapshot-chain pin on this machine: there is nothing to accept")
	}
	ks, err := v.liveKeys(ctx)
	if err != nil {
		return Rollback{}, err
	}
	pin, err := v.loadPin() // before the chain is read (loadPin)
	if err != nil {
		return Rollback{}, err
	}
	entries, rows, err := v.opt.Catalog.SnapshotChain(ctx, v.rec.ID)
	if err != nil {
		return Rollback{}, err
	}
	r := v.verifyChain(ks, entries, rows, v.describeRecord(ctx))
	if len(r.problems) > 0 {
		return Rollback{}, fmt.Errorf("%w: the vault's snapshot list does not verify by itself (%s): a rollback is accepted only for a list that is sound apart from being older; run coffer check", vault.ErrCorrupt, r.problems[0])
	}
	head := r.head()
	rb := Rollback{Head: head.Seq, Pinned: pin.Seq}
	if pin.Seq > 0 {
		rb.Rewritten = pin.Seq <= head.Seq && r.macs[pin.Seq] != pin.MAC
	}
	if !rb.Accepted() {
		return rb, nil
	}
	if head.Seq == 0 {
		// An empty list: no entry to pin; forget the pin instead.
		if err := v.opt.Pin.Save(v.rec.ID, 0, [32]byte{}); err != nil {
			return rb, err
		}
		return rb, nil
	}
	if err := v.opt.Pin.Save(v.rec.ID, head.Seq, head.MAC); err != nil {
		return rb, fmt.Errorf("snapshot chain: pin the accepted list: %w", err)
	}
	return rb, nil
}

// advancePin pins h if it is newer than the pin. Callers have verified
// that h's chain extends the pin (checkPin, pinnedPrefix).
func (v *Vault) advancePin(h ChainHead) {
	if v.opt.Pin == nil || h.Seq == 0 {
		return
	}
	seq, _, ok, err := v.opt.Pin.Load(v.rec.ID)
	if err == nil && ok && seq >= h.Seq {
		return
	}
	if err := v.opt.Pin.Save(v.rec.ID, h.Seq, h.MAC); err != nil {
		v.log.Warn("could not pin the snapshot chain", "err", err)
	}
}

// describeRecord names the fields in which s differs from its sealed
// object, "" when they cannot be compared.
func (v *Vault) describeRecord(ctx context.Context) func(vault.SnapshotRecord) string {
	return func(s vault.SnapshotRecord) string {
		sealed, _, err := v.loadSnapshotLinked(ctx, s.ID)
		if err != nil {
			return ""
		}
		return format.DiffSnapshot(s, sealed)
	}
}

// verifiedList reads the chain and the catalog's snapshot records and
// verifies them (rules 1–6), returning every record, soft-deleted ones
// included, oldest first.
func (v *Vault) verifiedList(ctx context.Context) ([]vault.SnapshotRecord, *chainReport, error) {
	ks, err := v.liveKeys(ctx)
	if err != nil {
		return nil, nil, err
	}
	pin, pinErr := v.loadPin() // before the chain is read (loadPin)
	entries, rows, err := v.opt.Catalog.SnapshotChain(ctx, v.rec.ID)
	if err != nil {
		return nil, nil, err
	}
	r := v.verifyChain(ks, entries, rows, v.describeRecord(ctx))
	v.checkPin(r, pin, pinErr)
	if len(r.problems) > 0 {
		more := ""
		if n := len(r.problems) - 1; n > 0 {
			more = fmt.Sprintf(" (and %d more problems)", n)
		}
		return rows, r, fmt.Errorf("%w: the vault's snapshot list does not verify: %s%s; run coffer check for the full report", vault.ErrCorrupt, r.problems[0], more)
	}
	v.advancePin(r.head())
	return rows, r, nil
}

// liveRecordOK reports what is wrong with the live record s by the chain,
// "" when its own entries prove it (whatever else is wrong in the list).
func (r *chainReport) liveRecordOK(s vault.SnapshotRecord) string {
	st := r.states[s.ID]
	switch {
	case st == nil:
		return "the vault never recorded it (or its chain entry does not verify)"
	case st.removed || st.forgotten || !s.Deleted.IsZero():
		return "the chain does not leave it live"
	case format.SnapshotDigest(s) != st.first.Digest:
		return fmt.Sprintf("the catalog's record differs from what chain entry %d recorded", st.first.Seq)
	}
	return ""
}

// VerifyChain verifies the snapshot list and returns its newest entry.
func (v *Vault) VerifyChain(ctx context.Context) (ChainHead, error) {
	_, r, err := v.verifiedList(ctx)
	if err != nil {
		return ChainHead{}, err
	}
	return r.head(), nil
}

// checkObject compares the snapshot object s (read with its link) with
// the chain (docs/format.md §8.2), returning what differs or "".
func (r *chainReport) checkObject(rec, sealed vault.SnapshotRecord, link format.SnapshotLink) string {
	st := r.states[rec.ID]
	if st == nil {
		return "the vault never recorded it"
	}
	e := st.first
	switch {
	case e.Kind == vault.ChainRecover:
		// Recovered from the store (recover.go): its link names the chain
		// that was lost with the catalog; the digest binds it to the entry.
	case link.Seq == 0 && e.Kind == vault.ChainAdd:
		return fmt.Sprintf("its object is a format 1 object, but chain entry %d recorded it in format 2", e.Seq)
	case link.Seq != 0 && e.Kind != vault.ChainAdd:
		return fmt.Sprintf("its object claims chain entry %d, but the vault imported it at entry %d", link.Seq, e.Seq)
	case link.Seq != 0 && link.Seq != e.Seq:
		return fmt.Sprintf("its object claims chain entry %d, but the chain records it at entry %d", link.Seq, e.Seq)
	case link.Seq != 0 && (e.Seq >= uint64(len(r.macs)) || r.macs[e.Seq-1] != link.Prev):
		return fmt.Sprintf("its object does not follow chain entry %d", e.Seq-1)
	}
	if format.SnapshotDigest(sealed) != e.Digest {
		return fmt.Sprintf("its sealed record differs from what chain entry %d recorded", e.Seq)
	}
	if d := format.DiffSnapshot(rec, sealed); d != "" {
		return "the catalog's " + d
	}
	return ""
}

// recordSnapshot seals s (its ID assigned) into the store and appends its
// add entry to the chain, in one catalog transaction (docs/format.md
// §8.1): SaveSnapshot's last step.
func (v *Vault) recordSnapshot(ctx context.Context, s vault.SnapshotRecord, principal string) error {
	return v.recordSnapshotWith(ctx, s, principal, nil)
}

// recordSnapshotWith is recordSnapshot that appends after the add entry,
// in the same transaction, the changes in then (a replacement's forget of
// the snapshot it replaces: replace.go).
func (v *Vault) recordSnapshotWith(ctx context.Context, s vault.SnapshotRecord, principal string, then []chainChange) error {
	ks, err := v.liveKeys(ctx)
	if err != nil {
		return err
	}
	pin, err := v.pinnedPrefix(ctx, ks)
	if err != nil {
		return fmt.Errorf("record snapshot %s: %w", s.ID, err)
	}
	var head ChainHead
	stored, advance := false, false
	err = v.opt.Catalog.AppendChain(ctx, v.rec.ID, func(prev vault.ChainEntry) ([]vault.ChainEntry, []vault.SnapshotRecord, error) {
		// Again inside the transaction: the chain did not shrink meanwhile.
		if prev.Seq <= pin.Seq {
			if err := pin.extendedBy(ChainHead{Seq: prev.Seq, MAC: prev.MAC}); err != nil {
				return nil, nil, err
			}
		}
		// SECURITY: the pin moves with an append only when it is prev
		// itself (or there is none): entries other writers appended since
		// were not verified here, and appending is not verifying. A
		// listing that verifies the whole chain moves it (checkPin).
		advance = pin.Seq == 0 || pin.Seq == prev.Seq
		link := format.SnapshotLink{Seq: prev.Seq + 1, Prev: prev.MAC}
		b, err := format.SealSnapshotLinked(s, link, ks.deks[ks.cur], ks.cur)
		if err != nil {
			return nil, nil, err
		}
		// Stored before the entry commits: a crash leaves an object the
		// chain does not name, never an entry without its object.
		if err := v.opt.Store.Put(ctx, snapHandle(s.ID), bytes.NewReader(b), int64(len(b))); err != nil {
			return nil, nil, fmt.Errorf("store snapshot %s: %w", s.ID, err)
		}
		stored = true
		e := vault.ChainEntry{Seq: link.Seq, Kind: vault.ChainAdd, Snapshot: s.ID, Time: v.opt.Now().UTC(), Principal: principal, Digest: format.SnapshotDigest(s)}
		mac := format.NewChainMAC(ks.chain, v.rec.ID)
		e.MAC = mac.Sum(prev.MAC, e)
		es := []vault.ChainEntry{e}
		for _, c := range then {
			n := vault.ChainEntry{Seq: es[len(es)-1].Seq + 1, Kind: c.kind, Snapshot: c.snapshot, Time: c.at.UTC(), Principal: c.by}
			n.MAC = mac.Sum(es[len(es)-1].MAC, n)
			es = append(es, n)
		}
		last := es[len(es)-1]
		head = ChainHead{Seq: last.Seq, MAC: last.MAC}
		return es, []vault.SnapshotRecord{s}, nil
	})
	if err != nil {
		// The catalog refused the entry (its transaction rolled back): the
		// object it would have named is removed, so that check does not
		// take it for proof of removed chain entries. A store that refuses
		// deletes (object lock) keeps it, and check reports it.
		if stored {
			if derr := v.opt.Store.Delete(context.WithoutCancel(ctx), snapHandle(s.ID)); derr != nil {
				v.log.Warn("could not remove the object of a snapshot the catalog refused", "snapshot", s.ID.Short(), "err", derr)
			}
		}
		return fmt.Errorf("record snapshot %s: %w", s.ID, err)
	}
	v.setLastHead(head)
	if advance {
		v.advancePin(head)
	}
	return nil
}

// chainChange is one change to append: kind of snapshot, at, by.
type chainChange struct {
	kind     vault.ChainKind
	snapshot vault.ID
	at       time.Time
	by       string
	// settings, for a settings entry: what the catalog writes with it.
	settings *vault.VaultSettings
}

// appendChanges appends changes to the chain in one transaction; the
// catalog refuses any whose snapshot is not in the state it needs
// (vault.ErrConflict), and then none is made.
func (v *Vault) appendChanges(ctx context.Context, changes []chainChange) error {
	if len(changes) == 0 {
		return nil
	}
	ks, err := v.liveKeys(ctx)
	if err != nil {
		return err
	}
	pin, err := v.pinnedPrefix(ctx, ks)
	if err != nil {
		return err
	}
	var head ChainHead
	advance := false
	err = v.opt.Catalog.AppendChain(ctx, v.rec.ID, func(prev vault.ChainEntry) ([]vault.ChainEntry, []vault.SnapshotRecord, error) {
		if prev.Seq <= pin.Seq {
			if err := pin.extendedBy(ChainHead{Seq: prev.Seq, MAC: prev.MAC}); err != nil {
				return nil, nil, err
			}
		}
		// SECURITY: the pin moves with an append only when it is prev
		// itself (or there is none): entries other writers appended since
		// were not verified here, and appending is not verifying. A
		// listing that verifies the whole chain moves it (checkPin).
		advance = pin.Seq == 0 || pin.Seq == prev.Seq
		mac := format.NewChainMAC(ks.chain, v.rec.ID)
		es := make([]vault.ChainEntry, len(changes))
		h := prev.MAC
		for i, c := range changes {
			e := vault.ChainEntry{Seq: prev.Seq + 1 + uint64(i), Kind: c.kind, Snapshot: c.snapshot, Time: c.at.UTC(), Principal: c.by}
			if c.settings != nil {
				e.Settings = c.settings
				e.Digest = format.SettingsDigest(v.rec.ID, *c.settings)
			}
			e.MAC = mac.Sum(h, e)
			h = e.MAC
			es[i] = e
		}
		head = ChainHead{Seq: es[len(es)-1].Seq, MAC: h}
		return es, nil, nil
	})
	if err != nil {
		return err
	}
	v.setLastHead(head)
	if advance {
		v.advancePin(head)
	}
	return nil
}

// LastChainHead is the chain's newest entry as of this vault's last
// append, for the audit log; zero before any.
func (v *Vault) LastChainHead() ChainHead {
	v.chainMu.Lock()
	defer v.chainMu.Unlock()
	return v.lastHead
}

func (v *Vault) setLastHead(h ChainHead) {
	v.chainMu.Lock()
	defer v.chainMu.Unlock()
	if h.Seq > v.lastHead.Seq {
		v.lastHead = h
	}
}

// String formats a head as the audit log records it.
func (h ChainHead) String() string { return fmt.Sprintf("%d:%x", h.Seq, h.MAC) }

// upgradeChain builds the chain of a format 1 vault from its sealed
// snapshot objects (docs/format.md §8.3); nothing when the chain exists
// or the vault has no snapshots. Open calls it only while the keyring is
// format 1.
func (v *Vault) upgradeChain(ctx context.Context) error {
	entries, rows, err := v.opt.Catalog.SnapshotChain(ctx, v.rec.ID)
	if err != nil || len(entries) > 0 {
		return err
	}
	// A vault that had a chain holds version 2 objects: its chain was
	// deleted, not never made.
	var v2 []string
	err = v.opt.Store.List(ctx, vault.SnapshotObject, func(oi vault.ObjectInfo) error {
		b, err := readRange(ctx, v.opt.Store, oi.Handle, 0, 5)
		if err == nil && len(b) == 5 && b[4] == format.SnapshotVersion2 {
			v2 = append(v2, oi.Handle.Name)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("upgrade the snapshot list: list snapshots: %w", err)
	}
	if len(v2) > 0 {
		return fmt.Errorf("open vault %q: %w: the catalog holds no snapshot chain, but the store holds %d snapshot(s) sealed into one (%s…): the chain was deleted from the catalog; restore the catalog from a backup", v.opt.Name, vault.ErrCorrupt, len(v2), v2[0][:8])
	}
	if len(rows) == 0 {
		return nil
	}
	type imp struct {
		sealed vault.SnapshotRecord
		row    vault.SnapshotRecord
	}
	imps := make([]imp, 0, len(rows))
	for _, s := range rows {
		sealed, link, err := v.loadSnapshotLinked(ctx, s.ID)
		if err != nil {
			return fmt.Errorf("upgrade the snapshot list: %w (the upgrade needs every snapshot's object)", err)
		}
		if link.Seq != 0 {
			return fmt.Errorf("upgrade the snapshot list: snapshot %s: %w: sealed into a chain the catalog does not hold", s.ID.Short(), vault.ErrCorrupt)
		}
		imps = append(imps, imp{sealed: sealed, row: s})
	}
	slices.SortFunc(imps, func(a, b imp) int {
		if c := a.sealed.Time.Compare(b.sealed.Time); c != 0 {
			return c
		}
		return bytes.Compare(a.sealed.ID[:], b.sealed.ID[:])
	})
	ks, err := v.liveKeys(ctx)
	if err != nil {
		return err
	}
	// A pin means this machine saw a chain: it was deleted, and the vault
	// rolled back to format 1 (a writer of store and catalog).
	if _, err := v.pinnedPrefix(ctx, ks); err != nil {
		return fmt.Errorf("upgrade the snapshot list: %w", err)
	}
	now := v.opt.Now().UTC()
	err = v.opt.Catalog.AppendChain(ctx, v.rec.ID, func(prev vault.ChainEntry) ([]vault.ChainEntry, []vault.SnapshotRecord, error) {
		if prev.Seq != 0 {
			return nil, nil, nil // another process upgraded it meanwhile
		}
		mac := format.NewChainMAC(ks.chain, v.rec.ID)
		es := make([]vault.ChainEntry, len(imps))
		var h [32]byte
		for i, im := range imps {
			e := vault.ChainEntry{Seq: uint64(i + 1), Kind: vault.ChainImport, Snapshot: im.sealed.ID, Time: now, Digest: format.SnapshotDigest(im.sealed)}
			if !im.row.Deleted.IsZero() {
				e.Kind, e.Time, e.Principal = vault.ChainImportForgotten, im.row.Deleted.UTC(), im.row.DeletedBy
			}
			e.MAC = mac.Sum(h, e)
			h = e.MAC
			es[i] = e
		}
		return es, nil, nil
	})
	if err != nil {
		if errors.Is(err, vault.ErrNotFound) || errors.Is(err, vault.ErrConflict) {
			return fmt.Errorf("upgrade the snapshot list: the snapshots changed while it ran (%w); open the vault again", err)
		}
		return fmt.Errorf("upgrade the snapshot list: %w", err)
	}
	v.log.Info("upgraded the vault's snapshot list to format 2", "snapshots", len(imps))
	return nil
}
