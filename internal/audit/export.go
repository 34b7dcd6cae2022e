package audit

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// The export archive: a tar of these files, in this order, under
// ExportDir. Every line of entries.jsonl is one record, in index order
// (an empty line stands for a record missing from the store); the
// archive holds the entries covered by checkpoint.note, the newest
// checkpoint the key signed, and every stored checkpoint up to it.
const (
	ExportDir             = "coffer-audit"
	exportReadme          = ExportDir + "/README.txt"
	exportVerifierKey     = ExportDir + "/verifier.key"
	exportCheckpoint      = ExportDir + "/checkpoint.note"
	exportCheckpointsFile = ExportDir + "/checkpoints.jsonl"
	exportEntries         = ExportDir + "/entries.jsonl"
)

// ExportVerifierKeyPath is where an export archive holds the verifier
// key (which VerifyExport trusts only when given no other).
const ExportVerifierKeyPath = exportVerifierKey

// Limits on what VerifyExport reads from an archive (untrusted input).
const (
	maxReadme          = 1 << 20
	maxKeyFile         = 4 << 10
	maxNote            = 64 << 10
	maxCheckpointsFile = 1 << 30
)

// exportCheckpointLine is a line of checkpoints.jsonl.
type exportCheckpointLine struct {
	Size int64  `json:"size"`
	Time string `json:"time"` // RFC 3339, UTC; not signed
	Note string `json:"note"` // the signed note
}

// Export writes the log in store to w as a tar archive that VerifyExport
// checks with nothing else: the entries covered by the newest checkpoint
// vkey verifies, every stored checkpoint up to it, the verifier key and
// a README saying how to verify by hand. It copies; it does not verify:
// a damaged log exports as it is, and VerifyExport reports what is
// wrong. Call Log.Checkpoint first to include the latest entries.
func Export(ctx context.Context, store Store, vkey string, w io.Writer) error {
	if err := export(ctx, store, vkey, w); err != nil {
		return fmt.Errorf("export audit log: %w", err)
	}
	return nil
}

func export(ctx context.Context, store Store, vkey string, w io.Writer) error {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return fmt.Errorf("verifier key: %w", err)
	}
	vs := note.VerifierList(v)
	cut, err := exportCut(ctx, store, vs)
	if err != nil {
		return err
	}
	size, err := store.AuditSize(ctx)
	if err != nil {
		return err
	}
	n := min(size, cut.Size) // fewer when entries were removed: the archive shows it

	// Tar headers carry sizes: a first pass measures, a second writes.
	// Both read the same bytes, since records and checkpoints up to the
	// cut never change.
	var cpLen, entLen int64
	if err := eachCheckpoint(ctx, store, cut.Size, func(line []byte) error { cpLen += int64(len(line)); return nil }); err != nil {
		return err
	}
	if err := eachEntryLine(ctx, store, n, func(line []byte) error { entLen += int64(len(line)); return nil }); err != nil {
		return err
	}

	mtime := cut.Time.UTC().Truncate(time.Second) // deterministic: the same log exports the same bytes
	tw := tar.NewWriter(w)
	file := func(name string, size int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644, ModTime: mtime})
	}
	small := func(name string, b []byte) error {
		if err := file(name, int64(len(b))); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	tree, _ := openCheckpoint(cut, vs)
	if err := small(exportReadme, []byte(readme(vkey, tree))); err != nil {
		return err
	}
	if err := small(exportVerifierKey, []byte(vkey+"\n")); err != nil {
		return err
	}
	if err := small(exportCheckpoint, []byte(cut.Note)); err != nil {
		return err
	}
	write := func(line []byte) error { _, err := tw.Write(line); return err }
	if err := file(exportCheckpointsFile, cpLen); err != nil {
		return err
	}
	if err := eachCheckpoint(ctx, store, cut.Size, write); err != nil {
		return err
	}
	if err := file(exportEntries, entLen); err != nil {
		return err
	}
	if err := eachEntryLine(ctx, store, n, write); err != nil {
		return err
	}
	return tw.Close()
}

// exportCut returns the newest stored checkpoint that vs verifies.
func exportCut(ctx context.Context, store Store, vs note.Verifiers) (Checkpoint, error) {
	latest, err := store.LatestAuditCheckpoint(ctx)
	if errors.Is(err, ErrNotFound) {
		return Checkpoint{}, errors.New("no signed checkpoint yet: the server signs one within a minute of the first entry")
	}
	if err != nil {
		return Checkpoint{}, err
	}
	if _, err := openCheckpoint(latest, vs); err == nil {
		return latest, nil
	}
	var cut Checkpoint
	src := &storeCheckpoints{ctx: ctx, store: store}
	for {
		c, ok, err := src.next()
		if err != nil {
			return Checkpoint{}, err
		}
		if !ok {
			break
		}
		if _, err := openCheckpoint(c, vs); err == nil {
			cut = c
		}
	}
	if cut.Size == 0 {
		return Checkpoint{}, errors.New("no stored checkpoint verifies with the verifier key: is it the key of this log? run coffer audit verify")
	}
	return cut, nil
}

// eachCheckpoint calls fn with the checkpoints.jsonl line of every stored
// checkpoint of size <= upTo.
func eachCheckpoint(ctx context.Context, store Store, upTo int64, fn func([]byte) error) error {
	src := &storeCheckpoints{ctx: ctx, store: store}
	for {
		c, ok, err := src.next()
		if err != nil {
			return err
		}
		if !ok || c.Size > upTo {
			return nil
		}
		b, err := json.Marshal(exportCheckpointLine{Size: c.Size, Time: c.Time.UTC().Format(time.RFC3339Nano), Note: c.Note})
		if err != nil {
			return err
		}
		if err := fn(append(b, '\n')); err != nil {
			return err
		}
	}
}

// eachEntryLine calls fn with the entries.jsonl line of every index below
// n: the record and a newline, or only a newline for a missing record.
func eachEntryLine(ctx context.Context, store Store, n int64, fn func([]byte) error) error {
	for i := int64(0); i < n; {
		recs, err := store.AuditRecords(ctx, i, verifyBatch)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if r.Index >= n {
				break
			}
			for ; i < r.Index; i++ {
				if err := fn([]byte("\n")); err != nil {
					return err
				}
			}
			if bytes.IndexByte(r.Data, '\n') >= 0 {
				// Cannot be one line; hashing it differently would
				// report a changed entry, which it is.
				r.Data = bytes.ReplaceAll(r.Data, []byte("\n"), []byte(`\n`))
			}
			if err := fn(append(slices.Clip(r.Data), '\n')); err != nil {
				return err
			}
			i++
		}
		if len(recs) < verifyBatch {
			for ; i < n; i++ {
				if err := fn([]byte("\n")); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// VerifyExport checks an archive written by Export, reading nothing else:
// it recomputes the tree from entries.jsonl, checks every checkpoint's
// signature and that the entries produce its hash, that checkpoint.note
// covers exactly the entries, and that the log extends opts.Trusted.
//
// vkey is the verifier key to trust. When it is "", the archive's own
// verifier.key is used, and the report says so: that proves the archive
// is consistent, not that the server you trust wrote it.
//
// It returns an error when the archive cannot be read (not a tar, files
// missing, out of order or over the limits); findings are in the Report.
func VerifyExport(r io.Reader, vkey string, opts VerifyOptions) (*Report, error) {
	rep, err := verifyExport(r, vkey, opts)
	if err != nil {
		return nil, fmt.Errorf("verify audit export: %w", err)
	}
	return rep, nil
}

func verifyExport(r io.Reader, vkey string, opts VerifyOptions) (*Report, error) {
	tr := tar.NewReader(r)
	next := func(name string, limit int64) (io.Reader, error) {
		h, err := tr.Next()
		if err == io.EOF {
			return nil, fmt.Errorf("%s missing", name)
		}
		if err != nil {
			return nil, fmt.Errorf("not an audit export: %w", err)
		}
		if h.Name != name {
			return nil, fmt.Errorf("found %q where %s should be (the archive's files must be in the order Export writes them)", h.Name, name)
		}
		if h.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("%s is not a regular file", name)
		}
		if limit > 0 && h.Size > limit {
			return nil, fmt.Errorf("%s: %d bytes exceeds %d", name, h.Size, limit)
		}
		return tr, nil
	}
	readAll := func(name string, limit int64) ([]byte, error) {
		f, err := next(name, limit)
		if err != nil {
			return nil, err
		}
		return io.ReadAll(io.LimitReader(f, limit))
	}

	if _, err := readAll(exportReadme, maxReadme); err != nil {
		return nil, err
	}
	keyFile, err := readAll(exportVerifierKey, maxKeyFile)
	if err != nil {
		return nil, err
	}
	archiveKey := strings.TrimSuffix(string(keyFile), "\n")
	var notes []string
	switch {
	case vkey == "":
		vkey = archiveKey
		notes = append(notes, fmt.Sprintf("verified with the archive's own verifier key %s: this proves the archive is consistent, not who wrote it; compare the key with one you trust, or pass it", archiveKey))
	case archiveKey != vkey:
		notes = append(notes, fmt.Sprintf("the archive's verifier.key (%q) is not the key given; checked with the key given", archiveKey))
	}
	vs, err := verifiers(vkey, opts.PreviousKeys)
	if err != nil {
		return nil, err
	}

	cutNote, err := readAll(exportCheckpoint, maxNote)
	if err != nil {
		return nil, err
	}
	cps, err := readCheckpointLines(next)
	if err != nil {
		return nil, err
	}
	// checkpoint.note is the checkpoint the archive claims to be cut at.
	cutSize := int64(-1)
	if n, err := note.Open(cutNote, vs); err == nil {
		if t, err := tlog.ParseTree([]byte(n.Text)); err == nil {
			cutSize = t.N
		}
	}
	if i := slices.IndexFunc(cps, func(c Checkpoint) bool { return c.Note == string(cutNote) }); i < 0 && cutSize >= 0 {
		cps = append(cps, Checkpoint{Size: cutSize, Note: string(cutNote)})
		slices.SortStableFunc(cps, func(a, b Checkpoint) int { return cmpInt(a.Size, b.Size) })
	}

	src := sliceCheckpoints(cps)
	c := newChecker(vs, &src)
	c.r.Notes = notes
	if cutSize < 0 {
		c.r.add(Problem{Kind: KindSignature, Index: -1, End: -1, Checkpoint: -1,
			Message: "checkpoint.note is not a checkpoint signed by the verifier key"})
	}
	c.setTrusted(opts.Trusted)
	if err := c.checkpointsAt(0); err != nil {
		return nil, err
	}

	f, err := next(exportEntries, 0)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := readLine(br, MaxRecord+1)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", exportEntries, c.pos+1, err)
		}
		if err := c.record(line, len(line) > 0, nil, nil); err != nil {
			return nil, err
		}
	}
	if h, err := tr.Next(); err != io.EOF {
		if err == nil {
			return nil, fmt.Errorf("unexpected file %q after %s", h.Name, exportEntries)
		}
		return nil, fmt.Errorf("not an audit export: %w", err)
	}
	if err := c.finish(); err != nil {
		return nil, err
	}
	rep := c.r
	if cutSize >= 0 && cutSize < rep.Entries {
		rep.add(Problem{Kind: KindUnproven, Index: cutSize, End: rep.Entries, Checkpoint: cutSize,
			Message: fmt.Sprintf("entries %d..%d are not covered by the archive's checkpoint.note (%d entries): they were added to the archive", cutSize, rep.Entries-1, cutSize)})
	}
	rep.sortProblems()
	return rep, nil
}

// readCheckpointLines reads checkpoints.jsonl: lines by strictly
// increasing size.
func readCheckpointLines(next func(string, int64) (io.Reader, error)) ([]Checkpoint, error) {
	f, err := next(exportCheckpointsFile, maxCheckpointsFile)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReader(io.LimitReader(f, maxCheckpointsFile))
	var cps []Checkpoint
	for n := 1; ; n++ {
		line, err := readLine(br, maxNote*2)
		if err == io.EOF {
			return cps, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", exportCheckpointsFile, n, err)
		}
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		var l exportCheckpointLine
		if err := dec.Decode(&l); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", exportCheckpointsFile, n, err)
		}
		t, err := time.Parse(time.RFC3339Nano, l.Time)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: time: %w", exportCheckpointsFile, n, err)
		}
		if len(cps) > 0 && l.Size <= cps[len(cps)-1].Size {
			return nil, fmt.Errorf("%s line %d: size %d does not follow %d", exportCheckpointsFile, n, l.Size, cps[len(cps)-1].Size)
		}
		cps = append(cps, Checkpoint{Size: l.Size, Note: l.Note, Time: t})
	}
}

// readLine returns the next line of br without its newline; io.EOF at
// the end. A last line without a newline, or one longer than limit, is an
// error.
func readLine(br *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > limit {
			return nil, fmt.Errorf("line longer than %d bytes", limit)
		}
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF && len(line) == 0:
			return nil, io.EOF
		case err == io.EOF:
			return nil, errors.New("last line does not end in a newline")
		default:
			return nil, err
		}
	}
}

// readme is README.txt of an export.
func readme(vkey string, t tlog.Tree) string {
	return strings.NewReplacer("{{KEY}}", vkey, "{{N}}", fmt.Sprint(t.N), "{{HASH}}", t.Hash.String()).Replace(readmeText)
}

const readmeText = `Coffer audit log export
=======================

This archive holds a Coffer server's audit log and the proof that the
server signed it. To check it on any machine:

    coffer audit verify --export THIS.tar --verifier-key '{{KEY}}'

Pass the verifier key you obtained from the server's operator (not the
one in this archive) to check who signed it; add the last checkpoint you
verified before to detect a rollback.

Files
-----

verifier.key       the server's public audit key, a note verifier key:
                   NAME+HASH+BASE64(0x01 || 32-byte Ed25519 public key)
                   (the key is everything after the second "+"; base64
                   may hold "+" too)
checkpoint.note    the signed checkpoint covering exactly entries.jsonl:
                   it says the log's first {{N}} entries have tree hash
                   {{HASH}}
checkpoints.jsonl  every earlier checkpoint, one JSON object a line:
                   {"size": N, "time": "...", "note": "<signed note>"}
                   ("time" is when it was written; it is not signed)
entries.jsonl      the entries, one JSON record a line, entry 0 first; an
                   empty line is an entry missing from the server's store

Verifying by hand
-----------------

1. The tree. Each line of entries.jsonl, without its newline, is a record.
   The tree is the RFC 6962 Merkle tree (as in Certificate Transparency):
     leaf hash  = SHA-256(0x00 || record)
     node hash  = SHA-256(0x01 || left || right)
     tree hash of n leaves, n > 1: split at k, the largest power of two
     below n; hash = node(tree(first k), tree(the rest)).
   In Python 3:

     import hashlib, base64
     def h(b): return hashlib.sha256(b).digest()
     def tree(leaves):
         if len(leaves) == 1: return leaves[0]
         k = 1
         while k * 2 < len(leaves): k *= 2
         return h(b"\x01" + tree(leaves[:k]) + tree(leaves[k:]))
     recs = open("entries.jsonl", "rb").read().split(b"\n")[:-1]
     print(len(recs), base64.b64encode(tree([h(b"\x00" + r) for r in recs])).decode())

   It must print the two numbers on lines 2 and 3 of checkpoint.note.

2. The signature. checkpoint.note is a signed note
   (https://pkg.go.dev/golang.org/x/mod/sumdb/note): its text is the
   three lines "go.sum database tree", the number of entries and the tree
   hash; after a blank line comes "— NAME SIG", where SIG is base64 of a
   4-byte key hash and a 64-byte Ed25519 signature of the text (all three
   lines, with their newlines). Check it with the public key in
   verifier.key, e.g. with OpenSSL 3: write the 32 key bytes after the
   0x01 as a DER key (prefix hex 302a300506032b6570032100), the 64
   signature bytes to sig.bin, the text to text.txt, and run
     openssl pkeyutl -verify -pubin -inkey key.der -keyform DER -rawin -in text.txt -sigfile sig.bin

3. Every line of checkpoints.jsonl is checked the same way, over its first
   "size" entries.
`
