//go:build cgo

package pkcs11

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/coffer-backup/coffer/internal/vault"
)

const softhsmModule = "/usr/lib/softhsm/libsofthsm2.so"

// requireSoftHSM skips the test when SoftHSM2 or its tools are missing,
// unless COFFER_REQUIRE_SERVICES is set (CI), where that is a failure.
func requireSoftHSM(t testing.TB) {
	t.Helper()
	var missing []string
	if _, err := os.Stat(softhsmModule); err != nil {
		missing = append(missing, softhsmModule)
	}
	for _, tool := range []string{"softhsm2-util", "pkcs11-tool", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "SoftHSM2 is not installed (missing " + strings.Join(missing, ", ") + "; apt-get install -y softhsm2 opensc)"
	if os.Getenv("COFFER_REQUIRE_SERVICES") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// token is a SoftHSM2 token made by scripts/softhsm-setup.sh in a
// temporary directory, with SOFTHSM2_CONF pointing at it for the test.
type token struct {
	dir string
	pin string // the user PIN pkcs11-tool logs in with
}

func newToken(t *testing.T) *token {
	t.Helper()
	requireSoftHSM(t)
	dir := t.TempDir()
	cmd := exec.Command("../../../scripts/softhsm-setup.sh", dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("softhsm-setup.sh: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	conf, ok := strings.CutPrefix(lines[len(lines)-1], "export SOFTHSM2_CONF=")
	if !ok || !strings.HasPrefix(conf, dir) {
		t.Fatalf("softhsm-setup.sh printed %q", out)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	return &token{dir: dir, pin: "1234"}
}

// uri names an object on the token; query replaces the default PIN query.
func (tk *token) uri(object string, query ...string) string {
	q := "pin-value=1234"
	if len(query) > 0 {
		q = strings.Join(query, "&")
	}
	return "pkcs11:token=coffer;object=" + object + "?module-path=" + softhsmModule + "&" + q
}

func (tk *token) tool(t *testing.T, args ...string) string {
	t.Helper()
	args = append([]string{"--module", softhsmModule, "--token-label", "coffer", "--login", "--pin", tk.pin}, args...)
	out, err := exec.Command("pkcs11-tool", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("pkcs11-tool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (tk *token) sh(t *testing.T, script string) {
	t.Helper()
	cmd := exec.Command("bash", "-euc", script)
	cmd.Dir = tk.dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
}

func open(t *testing.T, uri string) *Provider {
	t.Helper()
	p, err := Open(uri)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return p
}

var (
	ctx    = context.Background()
	secret = bytes.Repeat([]byte{0x42}, 32)
	aad    = []byte("vault-0123456789abcdef0123456789abroot\x00\x00\x00\x00")
)

func mustUnwrap(t *testing.T, p *Provider, w vault.WrappedKey, aad []byte) {
	t.Helper()
	got, err := p.Unwrap(ctx, w, aad)
	if err != nil {
		t.Fatalf("Unwrap: %v", err)
	}
	if !bytes.Equal(got, secret) {
		t.Fatalf("Unwrap returned %x", got)
	}
}

func wantErr(t *testing.T, err, target error, says ...string) {
	t.Helper()
	t.Log(err)
	if !errors.Is(err, target) {
		t.Fatalf("got %v, want %v", err, target)
	}
	for _, s := range says {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("error %q does not say %q", err, s)
		}
	}
	if strings.Contains(err.Error(), testPIN) || strings.Contains(err.Error(), "pin-value=") {
		t.Fatalf("error shows the PIN: %v", err)
	}
}

// softhsm26 reports whether the installed SoftHSM2 is 2.6, whose RSA-OAEP
// is SHA-1 only.
func softhsm26(t *testing.T) bool {
	out, err := exec.Command("softhsm2-util", "-v").Output()
	return err == nil && strings.HasPrefix(strings.TrimSpace(string(out)), "2.6")
}

func TestRSA(t *testing.T) {
	tk := newToken(t)
	p := open(t, tk.uri("backup-kek"))

	// KeyRef: the token and label, and the public key's SPKI hash as
	// pkcs11-tool exports it.
	der := filepath.Join(tk.dir, "pub.der")
	tk.tool(t, "--read-object", "--type", "pubkey", "--label", "backup-kek", "-o", der)
	b, err := os.ReadFile(der)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	want := vault.KeyRef{Provider: "pkcs11", KeyID: "token=coffer;object=backup-kek", Version: hex.EncodeToString(sum[:8])}
	if p.Current() != want {
		t.Fatalf("Current() = %+v, want %+v", p.Current(), want)
	}
	if p.kind != PrivateKey || p.pub.N.BitLen() != 3072 {
		t.Fatalf("kind %q, %d bits", p.kind, p.pub.N.BitLen())
	}

	w, err := p.Wrap(ctx, secret, aad)
	if err != nil {
		t.Fatal(err)
	}
	if w.KEK != want || len(w.Data) != 3+384+48 {
		t.Fatalf("wrapped %+v, %d bytes", w.KEK, len(w.Data))
	}
	if softhsm26(t) && w.Alg != AlgRSAOAEPSHA1 {
		t.Fatalf("SoftHSM2 2.6 record says %s, want %s", w.Alg, AlgRSAOAEPSHA1)
	}
	if w.Alg != AlgRSAOAEPSHA1 && w.Alg != AlgRSAOAEPSHA256 {
		t.Fatalf("alg %q", w.Alg)
	}
	mustUnwrap(t, p, w, aad)
	// Another provider for the same key (by id, type given) opens it.
	p2 := open(t, "pkcs11:token=coffer;id=%01;type=private?module-name=softhsm2&pin-value=1234")
	if p2.Current() != want {
		t.Fatalf("by id: %+v", p2.Current())
	}
	mustUnwrap(t, p2, w, aad)

	t.Run("aad bound", func(t *testing.T) {
		_, err := p.Unwrap(ctx, w, []byte("vault-other"))
		wantErr(t, err, vault.ErrWrongKey, `"backup-kek"`)
		_, err = p.Unwrap(ctx, w, nil)
		wantErr(t, err, vault.ErrWrongKey)
	})
	t.Run("flipped bits", func(t *testing.T) {
		for _, i := range []int{0, 1, 2, 3, 200, 386, 387, 400, len(w.Data) - 1} {
			bad := w
			bad.Data = bytes.Clone(w.Data)
			bad.Data[i] ^= 0x01
			_, err := p.Unwrap(ctx, bad, aad)
			wantErr(t, err, vault.ErrWrongKey)
		}
		bad := w
		bad.Data = w.Data[:len(w.Data)-1]
		_, err := p.Unwrap(ctx, bad, aad)
		wantErr(t, err, vault.ErrWrongKey)
	})
	t.Run("recorded hash is used", func(t *testing.T) {
		// A record that claims the other hash does not open as this one.
		other := w
		other.Alg = AlgRSAOAEPSHA256
		if w.Alg == AlgRSAOAEPSHA256 {
			other.Alg = AlgRSAOAEPSHA1
		}
		if _, err := p.Unwrap(ctx, other, aad); err == nil {
			t.Fatal("record opened under the other hash")
		}
		// A genuine SHA-256 record (made from the spec with the public
		// key): opens on a token with OAEP-SHA-256; on SoftHSM2 2.6 the
		// key is unavailable for it, with a message saying why, and it is
		// never mistaken for a wrong key nor opened with SHA-1.
		rec := vault.WrappedKey{KEK: want, Alg: AlgRSAOAEPSHA256, Data: specRSARecord(t, p.pub, crypto.SHA256, AlgRSAOAEPSHA256, secret, aad)}
		got, err := p.Unwrap(ctx, rec, aad)
		if softhsm26(t) {
			wantErr(t, err, vault.ErrKeyUnavailable, "does not support RSA-OAEP with SHA-256", `"backup-kek"`, `"coffer"`)
		} else if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("SHA-256 record: %v", err)
		}
		rec = vault.WrappedKey{KEK: want, Alg: AlgRSAOAEPSHA1, Data: specRSARecord(t, p.pub, crypto.SHA1, AlgRSAOAEPSHA1, secret, aad)}
		mustUnwrap(t, p, rec, aad)
	})
	t.Run("not this provider's", func(t *testing.T) {
		aes := w
		aes.Alg = AlgAESGCM
		_, err := p.Unwrap(ctx, aes, aad)
		wantErr(t, err, vault.ErrWrongKey, "pkcs11-aes-gcm")
		unknown := w
		unknown.Alg = "pkcs11-rsa-pkcs1"
		_, err = p.Unwrap(ctx, unknown, aad)
		wantErr(t, err, vault.ErrWrongKey, "unknown wrapping algorithm")
		plat := w
		plat.KEK.Provider = "platform"
		_, err = p.Unwrap(ctx, plat, aad)
		wantErr(t, err, vault.ErrKeyUnavailable)
	})
	t.Run("another key", func(t *testing.T) {
		tk.tool(t, "--keypairgen", "--key-type", "rsa:3072", "--label", "other-kek", "--id", "03", "--usage-decrypt")
		other := open(t, tk.uri("other-kek"))
		if other.Current().Version == want.Version || other.Current().KeyID != "token=coffer;object=other-kek" {
			t.Fatalf("other key: %+v", other.Current())
		}
		_, err := other.Unwrap(ctx, w, aad)
		wantErr(t, err, vault.ErrWrongKey, `"other-kek"`)
	})
	t.Run("replaced key", func(t *testing.T) {
		// A new key under the old label is not the key of Current: wraps
		// refuse it, and old records say the key was replaced.
		tk.sh(t, "cp -a tokens tokens.before-replace")
		tk.tool(t, "--delete-object", "--type", "privkey", "--label", "backup-kek")
		tk.tool(t, "--delete-object", "--type", "pubkey", "--label", "backup-kek")
		tk.tool(t, "--keypairgen", "--key-type", "rsa:3072", "--label", "backup-kek", "--id", "01", "--usage-decrypt")
		_, err := p.Wrap(ctx, secret, aad)
		wantErr(t, err, vault.ErrKeyUnavailable, "now holds another key", `"backup-kek"`)
		_, err = p.Unwrap(ctx, w, aad)
		wantErr(t, err, vault.ErrKeyUnavailable, "restore that version of the key", `"backup-kek"`)
		tk.sh(t, "rm -rf tokens && mv tokens.before-replace tokens")
		mustUnwrap(t, p, w, aad)
	})
	t.Run("context", func(t *testing.T) {
		c, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := p.Wrap(c, secret, aad); !errors.Is(err, context.Canceled) {
			t.Fatalf("Wrap with canceled context: %v", err)
		}
		if _, err := p.Wrap(ctx, secret[:31], aad); err == nil {
			t.Fatal("wrapped a 31-byte secret")
		}
	})
}

func TestAES(t *testing.T) {
	tk := newToken(t)
	p := open(t, tk.uri("backup-aes"))
	ref := p.Current()
	if p.kind != SecretKey || ref.Provider != "pkcs11" || ref.KeyID != "token=coffer;object=backup-aes" ||
		!regexp.MustCompile(`^[0-9a-f]{6}$`).MatchString(ref.Version) {
		t.Fatalf("Current() = %+v (kind %q)", ref, p.kind)
	}
	w, err := p.Wrap(ctx, secret, aad)
	if err != nil {
		t.Fatal(err)
	}
	if w.Alg != AlgAESGCM || w.KEK != ref || len(w.Data) != 61 || w.Data[0] != 1 {
		t.Fatalf("wrapped %s %+v %d bytes", w.Alg, w.KEK, len(w.Data))
	}
	mustUnwrap(t, p, w, aad)
	p2 := open(t, "pkcs11:token=coffer;id=%02;type=secret-key?module-path="+softhsmModule+"&pin-value=1234")
	if p2.Current() != ref {
		t.Fatalf("by id: %+v", p2.Current())
	}
	mustUnwrap(t, p2, w, aad)

	_, err = p.Unwrap(ctx, w, []byte("vault-other"))
	wantErr(t, err, vault.ErrWrongKey, `"backup-aes"`)
	for _, i := range []int{0, 1, 12, 13, 30, 44, 60} {
		bad := w
		bad.Data = bytes.Clone(w.Data)
		bad.Data[i] ^= 0x80
		_, err := p.Unwrap(ctx, bad, aad)
		wantErr(t, err, vault.ErrWrongKey)
	}
	rsa := w
	rsa.Alg = AlgRSAOAEPSHA1
	_, err = p.Unwrap(ctx, rsa, aad)
	wantErr(t, err, vault.ErrWrongKey)

	tk.tool(t, "--keygen", "--key-type", "aes:32", "--label", "other-aes", "--id", "04", "--usage-decrypt", "--sensitive")
	other := open(t, tk.uri("other-aes"))
	_, err = other.Unwrap(ctx, w, aad)
	wantErr(t, err, vault.ErrWrongKey, `"other-aes"`)
	// A secret key that is not AES-256 is refused.
	tk.tool(t, "--keygen", "--key-type", "aes:16", "--label", "short-aes", "--id", "05", "--usage-decrypt")
	_, err = Open(tk.uri("short-aes"))
	wantErr(t, err, vault.ErrKeyUnavailable, "not an AES-256 key")
}

func TestOpenErrors(t *testing.T) {
	tk := newToken(t)
	_, err := Open(tk.uri("no-such-key"))
	wantErr(t, err, vault.ErrKeyUnavailable, `"no-such-key"`, `"coffer"`, "restore")
	_, err = Open(strings.Replace(tk.uri("backup-kek"), "token=coffer", "token=elsewhere", 1))
	wantErr(t, err, vault.ErrKeyUnavailable, `no token labelled "elsewhere"`)
	_, err = Open("pkcs11:token=coffer;object=backup-kek?module-path=/nonexistent/libp11.so&pin-value=1234")
	wantErr(t, err, vault.ErrKeyUnavailable, "/nonexistent/libp11.so not found")
	_, err = Open("pkcs11:token=coffer;object=backup-kek?module-name=no-such-module&pin-value=1234")
	wantErr(t, err, vault.ErrKeyUnavailable, `no PKCS#11 module named "no-such-module"`)
	_, err = Open(tk.uri("backup-kek", "pin-value="+testPIN))
	wantErr(t, err, vault.ErrKeyUnavailable, "rejected the user PIN", "pin-value in the key URI", `"coffer"`)
	_, err = Open(tk.uri("backup-kek", "pin-source="+filepath.Join(tk.dir, "missing-pin")))
	wantErr(t, err, vault.ErrKeyUnavailable, "cannot read the PIN", "missing-pin")
	_, err = Open("pkcs11:token=coffer?module-path=" + softhsmModule + "&pin-value=1234")
	if err == nil || errors.Is(err, vault.ErrKeyUnavailable) {
		t.Fatalf("bad URI: %v", err)
	}
	// Same label on a private and a secret key: type= decides.
	tk.tool(t, "--keygen", "--key-type", "aes:32", "--label", "backup-kek", "--id", "06", "--usage-decrypt")
	_, err = Open(tk.uri("backup-kek"))
	wantErr(t, err, vault.ErrKeyUnavailable, "add type=private or type=secret-key")
	p := open(t, strings.Replace(tk.uri("backup-kek"), "object=backup-kek", "object=backup-kek;type=private", 1))
	if p.kind != PrivateKey {
		t.Fatal(p.kind)
	}
}

// configs are the RSA and the AES key of the setup script, with what
// pkcs11-tool --delete-object needs to delete each.
var configs = []struct{ name, object, typ string }{
	{"RSA", "backup-kek", "privkey"},
	{"AES", "backup-aes", "secrkey"},
}

// TestRevocation: a deleted key object, a token whose directory is gone,
// fail closed with ErrKeyUnavailable naming the key; once the key or token
// is back, the same provider works again.
func TestRevocation(t *testing.T) {
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			tk := newToken(t)
			p := open(t, tk.uri(c.object))
			w, err := p.Wrap(ctx, secret, aad)
			if err != nil {
				t.Fatal(err)
			}
			tk.sh(t, "cp -a tokens tokens.backup")

			tk.tool(t, "--delete-object", "--type", c.typ, "--label", c.object)
			_, err = p.Wrap(ctx, secret, aad)
			wantErr(t, err, vault.ErrKeyUnavailable, `"`+c.object+`"`, `token "coffer"`, "was deleted", "restore the key")
			_, err = p.Unwrap(ctx, w, aad)
			wantErr(t, err, vault.ErrKeyUnavailable, `"`+c.object+`"`, `token "coffer"`)

			tk.sh(t, "rm -rf tokens && cp -a tokens.backup tokens")
			w2, err := p.Wrap(ctx, secret, aad)
			if err != nil {
				t.Fatalf("after restoring the key: %v", err)
			}
			mustUnwrap(t, p, w, aad)
			mustUnwrap(t, p, w2, aad)

			tk.sh(t, "mv tokens tokens.away")
			_, err = p.Wrap(ctx, secret, aad)
			wantErr(t, err, vault.ErrKeyUnavailable, `"`+c.object+`"`, `"coffer"`)
			_, err = p.Unwrap(ctx, w, aad)
			wantErr(t, err, vault.ErrKeyUnavailable, `"`+c.object+`"`, `"coffer"`)
			tk.sh(t, "mv tokens.away tokens")
			mustUnwrap(t, p, w, aad)
			if _, err := p.Wrap(ctx, secret, aad); err != nil {
				t.Fatalf("after moving the token back: %v", err)
			}
		})
	}
}

// TestPINChange: a changed PIN fails closed, the rejected PIN is not
// retried, and a new PIN in the pin-source file is picked up without
// reopening.
func TestPINChange(t *testing.T) {
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			tk := newToken(t)
			tk.tool(t, "--change-pin", "--new-pin", testPIN)
			tk.pin = testPIN
			pinFile := filepath.Join(tk.dir, "pin")
			if err := os.WriteFile(pinFile, []byte(testPIN+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			p := open(t, tk.uri(c.object, "pin-source=file:"+pinFile))
			w, err := p.Wrap(ctx, secret, aad)
			if err != nil {
				t.Fatal(err)
			}

			tk.tool(t, "--change-pin", "--new-pin", "another-PIN-5555")
			tk.pin = "another-PIN-5555"
			_, err = p.Unwrap(ctx, w, aad)
			wantErr(t, err, vault.ErrKeyUnavailable, "rejected the user PIN", pinFile, `token "coffer"`)
			_, err = p.Wrap(ctx, secret, aad)
			wantErr(t, err, vault.ErrKeyUnavailable, "rejected the user PIN", "will not be tried again")

			// The PIN goes back to the old one, but the provider does not
			// try the PIN the token rejected: it waits for a new one.
			tk.tool(t, "--change-pin", "--new-pin", testPIN)
			tk.pin = testPIN
			_, err = p.Wrap(ctx, secret, aad)
			wantErr(t, err, vault.ErrKeyUnavailable, "rejected the user PIN")

			tk.tool(t, "--change-pin", "--new-pin", "third-PIN-6666")
			if err := os.WriteFile(pinFile, []byte("third-PIN-6666"), 0o600); err != nil {
				t.Fatal(err)
			}
			mustUnwrap(t, p, w, aad)
			if _, err := p.Wrap(ctx, secret, aad); err != nil {
				t.Fatalf("with the new PIN: %v", err)
			}
		})
	}
}

func TestConcurrent(t *testing.T) {
	tk := newToken(t)
	var wg sync.WaitGroup
	for _, c := range configs {
		p := open(t, tk.uri(c.object))
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 5 {
					w, err := p.Wrap(ctx, secret, aad)
					if err != nil {
						t.Error(err)
						return
					}
					got, err := p.Unwrap(ctx, w, aad)
					if err != nil || !bytes.Equal(got, secret) {
						t.Errorf("unwrap: %v", err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
}
