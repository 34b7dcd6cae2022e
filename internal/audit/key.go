package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/coffer-backup/coffer/internal/fsutil"
)

// KeyName is the name in the audit key and in every checkpoint's
// signature line. Keys are told apart by their hash (the second field of
// a verifier key), not by the name.
const KeyName = "coffer-audit"

// Files of LoadOrCreateKey's directory.
const (
	SigningKeyFile  = "signing.key"  // the note signer key, PRIVATE+KEY+…; mode 0600
	VerifierKeyFile = "verifier.key" // the note verifier key, public; mode 0644
)

// LoadOrCreateKey returns the audit signing key kept in dir and its
// verifier key (public: "coffer-audit+<hash>+<key>"), creating both on
// first use. The signing key file is never overwritten: two processes
// starting at once agree on one key. A verifier key file that does not
// belong to the signing key is an error (someone replaced it); a missing
// one is written again.
//
// The signer is returned as a note.Signer, never as a string, so that
// the private key cannot reach a log or an error by accident.
func LoadOrCreateKey(dir string) (note.Signer, string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", fmt.Errorf("audit key: %w", err)
	}
	path := filepath.Join(dir, SigningKeyFile)
	skey, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		s, _, gerr := note.GenerateKey(rand.Reader, KeyName)
		if gerr != nil {
			return nil, "", fmt.Errorf("audit key: %w", gerr)
		}
		err = writeNew(path, []byte(s+"\n"))
		if errors.Is(err, fs.ErrExist) {
			err = nil // another process created it first: use theirs
		}
		if err != nil {
			return nil, "", fmt.Errorf("audit key: %w", err)
		}
		skey, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, "", fmt.Errorf("audit key: %w", err)
	}
	signer, vkey, err := parseSignerKey(strings.TrimSuffix(string(skey), "\n"))
	if err != nil {
		// Never echo the file: it is the private key.
		return nil, "", fmt.Errorf("audit key %s: %w", path, err)
	}

	vpath := filepath.Join(dir, VerifierKeyFile)
	have, err := os.ReadFile(vpath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := fsutil.WriteFileSync(vpath, []byte(vkey+"\n"), 0o644); err != nil {
			return nil, "", fmt.Errorf("audit key: %w", err)
		}
	case err != nil:
		return nil, "", fmt.Errorf("audit key: %w", err)
	case strings.TrimSpace(string(have)) != vkey:
		return nil, "", fmt.Errorf("audit key: %s does not belong to %s (it should read %s): restore the key files together, or remove %s to write it again",
			vpath, path, vkey, vpath)
	}
	return signer, vkey, nil
}

// parseSignerKey returns the signer of an encoded signer key and its
// verifier key. The note package does not derive one from the other, so
// this reads the one key type it defines, Ed25519 (algorithm 1):
// PRIVATE+KEY+name+hash+base64(0x01 || 32-byte seed). The result is
// checked by signing and verifying a message with note itself.
func parseSignerKey(skey string) (note.Signer, string, error) {
	bad := errors.New("malformed signing key")
	signer, err := note.NewSigner(skey)
	if err != nil {
		return nil, "", bad
	}
	f := strings.SplitN(skey, "+", 5) // PRIVATE, KEY, name, hash, key (base64 may hold '+')
	if len(f) != 5 {
		return nil, "", bad
	}
	key, err := base64.StdEncoding.DecodeString(f[4])
	if err != nil || len(key) != 1+ed25519.SeedSize || key[0] != 1 {
		return nil, "", bad
	}
	pub := ed25519.NewKeyFromSeed(key[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(signer.Name(), pub)
	if err != nil {
		return nil, "", bad
	}
	if err := checkPair(signer, vkey); err != nil {
		return nil, "", err
	}
	return signer, vkey, nil
}

// checkPair checks that vkey verifies what signer signs.
func checkPair(signer note.Signer, vkey string) error {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return fmt.Errorf("verifier key: %w", err)
	}
	msg, err := note.Sign(&note.Note{Text: "coffer audit key check\n"}, signer)
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	if _, err := note.Open(msg, note.VerifierList(v)); err != nil {
		return fmt.Errorf("verifier key %s does not verify the signing key's signatures", vkey)
	}
	return nil
}

// writeNew writes b to path durably, failing with fs.ErrExist if path
// exists: the bytes go to a synced temporary file that is then linked into
// place, so no reader sees a partial key and no key is ever overwritten.
func writeNew(path string, b []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, fsutil.TempPrefix+"audit-key-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	err = f.Chmod(0o600) // before the secret is written
	if err == nil {
		_, err = f.Write(b)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Link(tmp, path); err != nil {
		return err
	}
	return fsutil.SyncDir(dir)
}

// OpenCheckpoint checks that c's note is signed by the key vkey and
// returns the tree it describes. It fails if the signature is missing or
// wrong, the note is not a tree, or its size is not c.Size.
func OpenCheckpoint(c Checkpoint, vkey string) (tlog.Tree, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return tlog.Tree{}, fmt.Errorf("verifier key: %w", err)
	}
	return openCheckpoint(c, note.VerifierList(v))
}

func openCheckpoint(c Checkpoint, vs note.Verifiers) (tlog.Tree, error) {
	n, err := note.Open([]byte(c.Note), vs)
	if err != nil {
		return tlog.Tree{}, describeNoteError(err)
	}
	t, err := tlog.ParseTree([]byte(n.Text))
	if err != nil {
		return tlog.Tree{}, err
	}
	if t.N != c.Size {
		return tlog.Tree{}, fmt.Errorf("note is for %d entries, recorded as a checkpoint of %d", t.N, c.Size)
	}
	return t, nil
}

// describeNoteError says what is wrong with a note that note.Open
// refused.
func describeNoteError(err error) error {
	var unverified *note.UnverifiedNoteError
	var invalid *note.InvalidSignatureError
	switch {
	case errors.As(err, &unverified):
		var by []string
		for _, s := range unverified.Note.UnverifiedSigs {
			by = append(by, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
		}
		return fmt.Errorf("not signed by the audit key (signed by %s)", strings.Join(by, ", "))
	case errors.As(err, &invalid):
		return fmt.Errorf("bad signature by the audit key %s+%08x", invalid.Name, invalid.Hash)
	}
	return fmt.Errorf("malformed note: %w", err)
}

// ParseCheckpointNote returns the checkpoint a signed note describes
// (Size from its text), checking the signature with vkey; for a trusted
// checkpoint kept as a file. Time is left zero.
func ParseCheckpointNote(msg []byte, vkey string) (Checkpoint, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("verifier key: %w", err)
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint: %w", describeNoteError(err))
	}
	t, err := tlog.ParseTree([]byte(n.Text))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint: %w", err)
	}
	return Checkpoint{Size: t.N, Note: string(bytes.Clone(msg))}, nil
}
