package format_test

// Frozen ciphertext samples: a small vault written once (config, a keyring
// of wrapped keys, two packs under two DEK versions, a snapshot) that must
// decode to the plaintext recorded in MANIFEST.json forever. Any format
// drift, on the read side or in the key schedule, fails here. Regenerate
// (go test -run TestCiphertextSamples -update) only with a new format
// version, keeping the old samples readable.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/cryptotest"
	"time"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

const sampleDir = "testdata/samples"

type sampleManifest struct {
	Comment  string                `json:"comment"`
	KEK      string                `json:"kek"`
	Vault    string                `json:"vault"`
	Keyring  string                `json:"keyring"`
	Snapshot string                `json:"snapshot"`
	Record   vectorSnapshot        `json:"record"`
	Trees    map[string][]string   `json:"trees"` // tree ID → dumpTree lines
	Files    map[string]sampleFile `json:"files"` // strconv.Quote(path in the snapshot) → content
	Blobs    int                   `json:"blobs"` // distinct blobs over all packs
}

type sampleFile struct {
	Size   int    `json:"size"`
	SHA256 string `json:"sha256"`
}

// sampleBlob is one blob found in a sample pack.
type sampleBlob struct {
	entry format.PackEntry
	pack  []byte
	o     *format.PackOpener
}

func TestCiphertextSamples(t *testing.T) {
	if *update {
		generateSamples(t)
	}
	var m sampleManifest
	b, err := os.ReadFile(filepath.Join(sampleDir, "MANIFEST.json"))
	if err != nil {
		t.Fatalf("%v (go test -run TestCiphertextSamples -update writes the samples)", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(sampleDir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	// Config and keyring (§6, §7); keys unwrap under the KEK (§1.1).
	cfg, err := format.ParseConfig(read("config"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ID != m.Vault {
		t.Fatalf("config ID %s, manifest %s", cfg.ID, m.Vault)
	}
	vid := mustID(t, m.Vault)
	kr, err := format.ParseKeyring(m.Keyring, read("keys/"+m.Keyring), vid)
	if err != nil {
		t.Fatal(err)
	}
	kek := mustKey(t, m.KEK)
	root, err := seal.Unwrap(kek, kr.Root, seal.KeyAAD(vid, "root", 0))
	if err != nil {
		t.Fatalf("root secret: %v", err)
	}
	deks := map[uint32]seal.Key{}
	for _, d := range kr.DEKs {
		if deks[d.Version], err = seal.Unwrap(kek, d.Wrapped, seal.KeyAAD(vid, "dek", d.Version)); err != nil {
			t.Fatalf("DEK %d: %v", d.Version, err)
		}
		// A DEK does not unwrap as another version or as the root.
		if _, err := seal.Unwrap(kek, d.Wrapped, seal.KeyAAD(vid, "dek", d.Version+1)); err == nil {
			t.Errorf("DEK %d unwraps as version %d", d.Version, d.Version+1)
		}
	}
	if len(deks) < 2 {
		t.Fatalf("sample keyring has %d DEKs", len(deks))
	}
	// The chunk-ID key, from R with the vault ID as salt (§1), by the spec.
	idKey := seal.Key(specDerive(root[:], vid[:], specLabelChunkID))
	hasher := format.NewIDHasher(idKey)

	// Every pack reads; every blob opens, decodes and has the ID of its data.
	codec := format.NewCodec()
	blobs := map[vault.ID]sampleBlob{}
	packs, _ := filepath.Glob(filepath.Join(sampleDir, "packs", "*"))
	versions := map[uint32]bool{}
	for _, p := range packs {
		name := mustID(t, filepath.Base(p))
		data := read("packs/" + filepath.Base(p))
		o, entries, err := format.ReadPackHeader(name, bytes.NewReader(data), int64(len(data)), dekSet(deks))
		if err != nil {
			t.Fatalf("pack %s: %v", name, err)
		}
		versions[o.DEKVersion] = true
		for _, e := range entries {
			raw := openSample(t, codec, sampleBlob{e, data, o})
			if got := hasher.ID(raw); got != e.ID {
				t.Errorf("blob %s holds data whose ID is %s", e.ID, got)
			}
			blobs[e.ID] = sampleBlob{e, data, o}
		}
	}
	if len(versions) < 2 || len(blobs) != m.Blobs {
		t.Errorf("packs under DEK versions %v, %d blobs; want two versions and %d blobs", versions, len(blobs), m.Blobs)
	}

	// The snapshot (§8).
	sid := mustID(t, m.Snapshot)
	rec, err := format.OpenSnapshot(sid, read("snapshots/"+m.Snapshot), dekSet(deks))
	if err != nil {
		t.Fatal(err)
	}
	s := m.Record
	want := vault.SnapshotRecord{ID: sid, Host: s.Host, Paths: s.Paths, Tags: s.Tags, Tree: mustID(t, s.Tree),
		Files: s.Files, Dirs: s.Dirs, Bytes: s.Bytes, BytesAdded: s.BytesAdded, Duration: time.Duration(s.DurationNS)}
	want.Time, _ = time.Parse(time.RFC3339Nano, s.Time)
	sameSnapshot(t, rec, want)

	// Walk the trees from the root: every tree and file of the manifest,
	// and nothing else.
	seenTrees, seenFiles := map[string]bool{}, map[string]bool{}
	var walk func(dir string, id vault.ID)
	walk = func(dir string, id vault.ID) {
		b, ok := blobs[id]
		if !ok || b.entry.Type != vault.TreeBlob {
			t.Fatalf("tree %s of %q is not a tree blob in the packs", id, dir)
		}
		tr, err := format.DecodeTree(openSample(t, codec, b))
		if err != nil {
			t.Fatalf("tree %s: %v", id, err)
		}
		got := strings.Split(strings.TrimSuffix(dumpTree(tr), "\n"), "\n")
		if !slices.Equal(got, m.Trees[id.String()]) {
			t.Errorf("tree %s of %q:\n got %q\nwant %q", id, dir, got, m.Trees[id.String()])
		}
		seenTrees[id.String()] = true
		for _, n := range tr.Nodes {
			p := path.Join(dir, string(n.Name))
			switch n.Kind {
			case format.KindDir:
				walk(p, n.Subtree)
			case format.KindFile:
				var content []byte
				for _, c := range n.Content {
					cb, ok := blobs[c]
					if !ok || cb.entry.Type != vault.DataBlob {
						t.Fatalf("%s: chunk %s is not a data blob in the packs", p, c)
					}
					content = append(content, openSample(t, codec, cb)...)
				}
				sum := sha256.Sum256(content)
				if f := m.Files[strconv.Quote(p)]; f.Size != len(content) || f.SHA256 != hex.EncodeToString(sum[:]) || uint64(len(content)) != n.Size {
					t.Errorf("%s: %d bytes, sha256 %x; manifest %+v, node size %d", p, len(content), sum, f, n.Size)
				}
				seenFiles[p] = true
			}
		}
	}
	walk("/", rec.Tree)
	if len(seenTrees) != len(m.Trees) || len(seenFiles) != len(m.Files) {
		t.Errorf("walked %d trees and %d files; manifest has %d and %d", len(seenTrees), len(seenFiles), len(m.Trees), len(m.Files))
	}
}

func openSample(tb testing.TB, codec *format.Codec, b sampleBlob) []byte {
	tb.Helper()
	e := b.entry
	pt, err := b.o.Open(nil, e.Type, e.ID, e.Offset, b.pack[e.Offset:e.Offset+e.Length])
	if err != nil {
		tb.Fatal(err)
	}
	raw, err := codec.Decode(nil, pt, e.RawLen)
	if err != nil {
		tb.Fatal(err)
	}
	return raw
}

// generateSamples writes testdata/samples with seeded randomness.
func generateSamples(t *testing.T) {
	cryptotest.SetGlobalRandom(t, 3)
	if err := os.RemoveAll(sampleDir); err != nil {
		t.Fatal(err)
	}
	created := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	kek, root := testKey("sample kek"), testKey("sample root")
	dek1, dek2 := testKey("sample dek 1"), testKey("sample dek 2")
	vid := testID("sample vault")
	m := sampleManifest{
		Comment: "A frozen vault: the files beside this one must decode to what is recorded here, forever.",
		KEK:     hex.EncodeToString(kek[:]), Vault: vid.String(), Keyring: format.KeyringName(1),
		Trees: map[string][]string{}, Files: map[string]sampleFile{},
	}
	kr := format.Keyring{Format: 1, Vault: vid.String(), Generation: 1, Created: created,
		KEK:  format.KeyringKEK{Provider: "platform", KeyID: "sample", Version: "1", Alg: "hkdf-sha256-aes-256-gcm"},
		Root: seal.Wrap(kek, root, seal.KeyAAD(vid, "root", 0)),
		DEKs: []format.KeyringDEK{
			{Version: 1, Created: created, Wrapped: seal.Wrap(kek, dek1, seal.KeyAAD(vid, "dek", 1))},
			{Version: 2, Created: created, Wrapped: seal.Wrap(kek, dek2, seal.KeyAAD(vid, "dek", 2))},
		},
		CurrentDEK: 2}
	cfg := format.Config{Format: 1, ID: vid.String(), Created: created,
		Chunker: vault.ChunkerParams{Min: 512 << 10, Avg: 1 << 20, Max: 8 << 20}, PackSize: 16 << 20}
	writeJSON := func(name string, v any) {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(sampleDir, name), append(b, '\n'))
	}
	writeJSON("config", cfg)
	writeJSON("keys/"+m.Keyring, kr)

	codec := format.NewCodec()
	hasher := format.NewIDHasher(seal.Derive(root, vid[:], seal.LabelChunkID))
	data := format.NewPackWriter(dek1, 1, nil) // data blobs under the old DEK
	trees := format.NewPackWriter(dek2, 2, nil)
	seen := map[vault.ID]bool{}
	add := func(w *format.PackWriter, typ vault.BlobType, raw []byte) vault.ID {
		id := hasher.ID(raw)
		if !seen[id] {
			w.Add(typ, id, codec.Encode(nil, raw), len(raw))
			seen[id] = true
		}
		return id
	}
	record := func(p string, content []byte) {
		sum := sha256.Sum256(content)
		m.Files[strconv.Quote(p)] = sampleFile{Size: len(content), SHA256: hex.EncodeToString(sum[:])}
	}
	// file stores content in chunks and returns its node; p is its path.
	file := func(p, name string, content []byte, chunk int) format.Node {
		record(p, content)
		n := format.Node{Kind: format.KindFile, Name: []byte(name), Perm: 0o644, UID: 1000, GID: 100, Size: uint64(len(content)),
			MTime: 1741064767123456789, CTime: 1741064767123456789, Inode: uint64(len(m.Files) + 10), Device: 2049, NLink: 1}
		for len(content) > 0 {
			c := content[:min(chunk, len(content))]
			content = content[len(c):]
			n.Content = append(n.Content, add(data, vault.DataBlob, c))
		}
		return n
	}
	tree := func(nodes ...format.Node) vault.ID {
		tr := &format.Tree{Nodes: nodes}
		tr.Sort()
		enc := mustEncodeTree(t, tr)
		id := add(trees, vault.TreeBlob, enc)
		m.Trees[id.String()] = strings.Split(strings.TrimSuffix(dumpTree(tr), "\n"), "\n")
		return id
	}

	text, bin, tiny := textData(40, 60000), testData(41, 3000), []byte("hello\n")
	docs := tree(
		file("/home/ann/docs/report.txt", "report.txt", text, 25000),
		file("/home/ann/docs/photo.bin", "photo.bin", bin, 1<<20),
		file("/home/ann/docs/empty", "empty", nil, 1),
		file("/home/ann/docs/caf\xc3\xa9 \xff.txt", "caf\xc3\xa9 \xff.txt", tiny, 1<<20),
		format.Node{Kind: format.KindSymlink, Name: []byte("latest"), Perm: 0o777, Target: []byte("report.txt")},
		format.Node{Kind: format.KindFIFO, Name: []byte("pipe"), Perm: 0o600,
			Xattrs: []format.Xattr{{Name: []byte("user.note"), Value: []byte("a fifo")}}},
	)
	// A second copy of the report deduplicates to the same chunks.
	copyNode := file("/home/ann/report-copy.txt", "report-copy.txt", text, 25000)
	ann := tree(format.Node{Kind: format.KindDir, Name: []byte("docs"), Perm: 0o755, Subtree: docs}, copyNode)
	home := tree(format.Node{Kind: format.KindDir, Name: []byte("ann"), Perm: 0o700, UID: 1000, Subtree: ann})
	rootTree := tree(format.Node{Kind: format.KindDir, Name: []byte("home"), Perm: 0o755, Subtree: home})

	for _, w := range []*format.PackWriter{data, trees} {
		name := w.ID()
		b, _ := w.Finish()
		writeFile(t, filepath.Join(sampleDir, "packs", name.String()), b)
	}
	m.Blobs = len(seen)

	rec := vault.SnapshotRecord{ID: testID("sample snapshot"), Time: time.Date(2025, 3, 4, 5, 7, 0, 123456789, time.UTC),
		Host: "ann-laptop", Paths: []string{"/home/ann"}, Tags: []string{"sample"}, Tree: rootTree,
		Files: 5, Dirs: 3, Bytes: uint64(2*len(text) + len(bin) + len(tiny)), BytesAdded: 12345, Duration: 1500 * time.Millisecond}
	obj, err := format.SealSnapshot(rec, dek2, 2)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(sampleDir, "snapshots", rec.ID.String()), obj)
	m.Snapshot = rec.ID.String()
	m.Record = *snapVector("", "", nil, nil, "", &rec).Snapshot
	writeJSON("MANIFEST.json", m)
}
