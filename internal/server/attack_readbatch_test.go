package server_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// readBatch decodes a POST …/read answer of len(refs) records: the blobs
// read, or the first failed record's error.
func readBatch(t *testing.T, out []byte, refs []api.Ref) ([][]byte, error) {
	t.Helper()
	codec := format.NewCodec()
	rd := bytes.NewReader(out)
	var blobs [][]byte
	for i, want := range refs {
		ref, rawLen, encLen, failed, err := api.ReadRecordHeader(rd, format.MaxBlobRawSize)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if ref != want {
			t.Fatalf("record %d is for %v, want %v", i, ref, want)
		}
		if failed != nil {
			return blobs, failed
		}
		p := make([]byte, encLen)
		if _, err := io.ReadFull(rd, p); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		b, err := codec.Decode(nil, p, uint32(rawLen))
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		blobs = append(blobs, b)
	}
	if rd.Len() != 0 {
		t.Fatalf("%d bytes after the last record", rd.Len())
	}
	return blobs, nil
}

// TestAttackReadBatchDataNeedsDataRead: POST …/read serves trees to what
// may list the vault (vault.read: ls, find, stats through a server load
// trees many per request) and data only to what may restore (data.read),
// as GET trees/{id} and GET data/{id} do. A backup-reader's batch that
// names a data blob, even after trees, is refused whole before anything
// is sent; so is every batch of a token scoped to another vault, or of
// no token. An operator's same batch is answered (the refusals are the
// permission's, not the batch's).
func TestAttackReadBatchDataNeedsDataRead(t *testing.T) {
	a := newArena(t)
	ctx := context.Background()
	if _, err := a.owner.CreateVault(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	op := a.roleToken(authn.RoleBackupOperator, "a")
	snap := a.backupAs(op, t.TempDir(), "db01")
	eng, err := a.env.Server.Engine(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	secret := append([]byte("the secret only data.read may see: "), randomBytes(7, 2000)...)
	id := eng.BlobID(secret)
	if _, err := eng.SaveBlob(ctx, vault.DataBlob, id, eng.Codec().Encode(nil, secret), len(secret)); err != nil {
		t.Fatal(err)
	}
	if err := eng.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	tree := api.Ref{Type: vault.TreeBlob, ID: snap.Tree}
	data := api.Ref{Type: vault.DataBlob, ID: id}
	body := func(refs ...api.Ref) []byte {
		var b []byte
		for _, r := range refs {
			b = api.AppendRef(b, r)
		}
		return b
	}

	a.principal("rita", "user", "", authn.RoleBackupReader, "a")
	_, rita := a.mint(a.env.OwnerToken, "POST", "/v1/tokens", api.CreateToken{Name: "rita", Principal: "rita"})
	readers := map[string]string{"reader token": a.roleToken(authn.RoleBackupReader, "a"), "reader user": rita.Secret}
	for name, tok := range readers {
		// Trees: what a reader lists with.
		st, out := a.call("POST", "/v1/vaults/a/read", tok, body(tree, tree))
		if st != http.StatusOK {
			t.Fatalf("%s: a batch of trees: status %d: %s", name, st, out)
		}
		if bs, err := readBatch(t, out, []api.Ref{tree, tree}); err != nil || len(bs) != 2 {
			t.Errorf("%s: a batch of trees: %d read, %v", name, len(bs), err)
		} else if _, err := format.DecodeTree(bs[0]); err != nil {
			t.Errorf("%s: the tree read does not decode: %v", name, err)
		}
		// Data, alone or behind trees: refused whole.
		for what, b := range map[string][]byte{"data alone": body(data), "trees then data": body(tree, tree, data), "data then a tree": body(data, tree)} {
			st, out := a.call("POST", "/v1/vaults/a/read", tok, b)
			if st != http.StatusForbidden {
				t.Errorf("%s: a batch of %s: status %d, want 403", name, what, st)
			}
			if bytes.Contains(out, secret[len(secret)-64:]) || !bytes.HasPrefix(out, []byte("{")) { // an error's JSON, no record
				t.Errorf("%s: the refused batch of %s sent records: %.120q", name, what, out)
			}
		}
	}
	// Scoped elsewhere, or no token at all: not even trees.
	for name, c := range map[string]struct {
		tok  string
		want int
	}{
		"vault b's reader":   {a.roleToken(authn.RoleBackupReader, "b"), http.StatusForbidden},
		"vault b's operator": {a.roleToken(authn.RoleBackupOperator, "b"), http.StatusForbidden},
		"key officer":        {a.roleToken(authn.RoleKeyOfficer, "a"), http.StatusForbidden},
		"approver":           {a.roleToken(authn.RoleSecurityApprover, ""), http.StatusForbidden},
		"nobody":             {"", http.StatusUnauthorized},
	} {
		for what, b := range map[string][]byte{"trees": body(tree), "data": body(data)} {
			if st, out := a.call("POST", "/v1/vaults/a/read", c.tok, b); st != c.want || bytes.Contains(out, secret[len(secret)-64:]) {
				t.Errorf("%s: a batch of %s: status %d, want %d: %.200q", name, what, st, c.want, out)
			}
		}
	}
	// What may restore reads the same batch.
	st, out := a.call("POST", "/v1/vaults/a/read", op, body(tree, tree, data))
	if st != http.StatusOK {
		t.Fatalf("operator: status %d: %s", st, out)
	}
	bs, err := readBatch(t, out, []api.Ref{tree, tree, data})
	if err != nil || len(bs) != 3 || !bytes.Equal(bs[2], secret) {
		t.Errorf("operator: %d blobs read, %v; the data blob is right: %v", len(bs), err, len(bs) == 3 && bytes.Equal(bs[2], secret))
	}
}
