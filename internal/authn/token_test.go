package authn

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"
	"testing/iotest"
)

// counter is a reader yielding 0, 1, 2, … so that tests know every byte
// Generate drew.
type counter struct{ n byte }

func (c *counter) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = c.n
		c.n++
	}
	return len(p), nil
}

func TestGenerate(t *testing.T) {
	tok, hash, id, err := Generate(&counter{})
	if err != nil {
		t.Fatal(err)
	}
	// The first 32 bytes are the secret, the next 8 the ID.
	const want = "cft_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
	if string(tok) != want {
		t.Errorf("token %s, want %s", string(tok), want)
	}
	if len(tok) != 47 {
		t.Errorf("token has %d characters, want 47", len(tok))
	}
	var secret [32]byte
	for i := range secret {
		secret[i] = byte(i)
	}
	if hash != sha256.Sum256(secret[:]) {
		t.Errorf("hash %x is not SHA-256 of the secret bytes", hash)
	}
	if id != "2021222324252627" {
		t.Errorf("id %s, want 2021222324252627 (the 8 bytes after the secret)", id)
	}
	if got, err := ParseToken(string(tok)); err != nil || got != hash {
		t.Errorf("ParseToken of a generated token: %x, %v; want %x", got, err, hash)
	}

	// With crypto/rand: well formed, and distinct.
	seen := map[string]bool{}
	idRE := regexp.MustCompile(`^[0-9a-f]{16}$`)
	for range 100 {
		tok, hash, id, err := Generate(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if !idRE.MatchString(id) {
			t.Errorf("id %q is not 16 lowercase hex digits", id)
		}
		if strings.Contains(string(tok), id) {
			t.Errorf("id %s appears in its token", id)
		}
		if got, err := ParseToken(string(tok)); err != nil || got != hash {
			t.Errorf("ParseToken of a generated token: %v", err)
		}
		if seen[string(tok)] || seen[id] {
			t.Fatal("Generate repeated a token or an ID")
		}
		seen[string(tok)], seen[id] = true, true
	}
}

func TestGenerateShortRead(t *testing.T) {
	for _, n := range []int64{0, 31, 32, 39} {
		if _, _, _, err := Generate(io.LimitReader(&counter{}, n)); err == nil {
			t.Errorf("Generate with %d random bytes succeeded", n)
		}
	}
	if _, _, _, err := Generate(iotest.ErrReader(errors.New("no entropy"))); err == nil || !strings.Contains(err.Error(), "no entropy") {
		t.Errorf("Generate with a failing reader: %v", err)
	}
}

// TestSecretRedacted checks that a token does not leak through fmt or
// slog.
func TestSecretRedacted(t *testing.T) {
	tok, _, _, err := Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	body := string(tok)[4:]
	var out []string
	for _, f := range []string{"%v", "%s", "%+v", "%#v", "%q", "%x", "%X"} {
		out = append(out, fmt.Sprintf(f, tok), fmt.Sprintf(f, struct{ T Secret }{tok}))
	}
	out = append(out, fmt.Sprint(tok), fmt.Sprintln(tok))
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "token", tok)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "token", tok)
	out = append(out, buf.String())
	for _, s := range out {
		if strings.Contains(s, body) || strings.Contains(strings.ToLower(s), hex.EncodeToString([]byte(body))) {
			t.Errorf("token leaked: %s", s)
		}
	}
}

// TestParseTokenVectors runs testdata/tokens.txt.
func TestParseTokenVectors(t *testing.T) {
	f, err := os.Open("testdata/tokens.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for line := 1; sc.Scan(); line++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		n++
		hash, err := ParseToken(fields[1])
		switch fields[0] {
		case "ok":
			if err != nil {
				t.Errorf("line %d: %v", line, err)
			} else if got := hex.EncodeToString(hash[:]); got != fields[2] {
				t.Errorf("line %d: hash %s, want %s", line, got, fields[2])
			}
		case "malformed":
			if err == nil {
				t.Errorf("line %d: accepted", line)
			} else {
				checkNoEcho(t, err, fields[1])
			}
		default:
			t.Fatalf("line %d: unknown outcome %q", line, fields[0])
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Fatalf("only %d vectors", n)
	}
}

// TestParseTokenWhitespace covers what testdata/tokens.txt cannot hold.
func TestParseTokenWhitespace(t *testing.T) {
	const good = "cft_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
	for _, s := range []string{
		"",
		good + "\n",
		" " + good,
		good[:46] + "\n",             // the decoder would skip the newline
		good[:20] + "\n" + good[21:], // a newline in place of a character
		good[:20] + "\r" + good[21:],
		good[:20] + "\x00" + good[21:],
		good[:20] + " " + good[21:],
		"\n" + good[1:],
	} {
		if _, err := ParseToken(s); err == nil {
			t.Errorf("ParseToken(%q) succeeded", s)
		} else {
			checkNoEcho(t, err, s)
		}
	}
}

// checkNoEcho fails if err contains any 8-character piece of tok.
func checkNoEcho(t *testing.T, err error, tok string) {
	t.Helper()
	msg := err.Error()
	for i := 0; i+8 <= len(tok); i++ {
		if strings.Contains(msg, tok[i:i+8]) {
			t.Errorf("error %q echoes the token", msg)
			return
		}
	}
}

// FuzzParseToken checks that ParseToken never panics, accepts only
// 47-character tokens, and that an accepted token has one spelling:
// parse, then encode, gives the input back.
func FuzzParseToken(f *testing.F) {
	f.Add("cft_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8")
	f.Add("cft_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHhh")
	f.Add("cft___________________________________________8")
	f.Add("cft_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdH\nh8")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		secret, err := parseSecret(s)
		hash, err2 := ParseToken(s)
		if (err == nil) != (err2 == nil) {
			t.Fatalf("parseSecret and ParseToken disagree: %v, %v", err, err2)
		}
		if err != nil {
			if len(s) <= 2*tokenLen { // longer ones cost time, and fail on length alone
				checkNoEcho(t, err, s)
			}
			return
		}
		if enc := encodeSecret(secret); enc != s {
			t.Fatalf("%q parsed, encodes back as %q", s, enc)
		}
		if hash != sha256.Sum256(secret[:]) {
			t.Fatal("hash is not SHA-256 of the secret")
		}
	})
}
