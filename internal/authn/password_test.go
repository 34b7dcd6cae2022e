package authn

import (
	"errors"
	"strings"
	"testing"
)

func TestPassword(t *testing.T) {
	h, err := HashPassword("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=65536,t=2,p=2$") || strings.Contains(h, "horse") {
		t.Errorf("hash %q", h)
	}
	if err := CheckPassword(h, "correct horse battery"); err != nil {
		t.Errorf("right password: %v", err)
	}
	if err := CheckPassword(h, "correct horse batterz"); !errors.Is(err, ErrBadPassword) {
		t.Errorf("wrong password: %v", err)
	}
	h2, _ := HashPassword("correct horse battery")
	if h2 == h {
		t.Error("two hashes of one password are equal: no salt")
	}
	if _, err := HashPassword("short"); err == nil {
		t.Error("a 5-character password was accepted")
	}
	for _, bad := range []string{"", "$argon2id$", "$bcrypt$x$y$z$w", "$argon2id$v=19$m=0,t=2,p=2$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
		"$argon2id$v=19$m=99999999,t=2,p=2$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", "$argon2id$v=19$m=65536,t=2,p=2$!!$!!"} {
		if err := CheckPassword(bad, "correct horse battery"); err == nil || errors.Is(err, ErrBadPassword) {
			t.Errorf("CheckPassword(%q) = %v, want a malformed-hash error", bad, err)
		}
	}
}

// TestTimingHash: the hash checked for unknown names and principals
// without a password costs a real check and matches no password.
func TestTimingHash(t *testing.T) {
	if err := CheckPassword(TimingHash(), "any password at all"); !errors.Is(err, ErrBadPassword) {
		t.Errorf("check against the timing hash: %v, want ErrBadPassword", err)
	}
	ref, err := HashPassword("a reference password")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Split(TimingHash(), "$")[1:4], strings.Split(ref, "$")[1:4]; strings.Join(got, "$") != strings.Join(want, "$") {
		t.Errorf("timing hash costs %v, a real one %v", got, want)
	}
}
