package authn

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Passwords are stored as argon2id hashes in the PHC string format,
// $argon2id$v=19$m=65536,t=2,p=2$SALT$HASH: 64 MiB of memory, 2 passes,
// 2 lanes, a 128-bit salt and a 256-bit tag. RFC 9106 §4 recommends
// t=1, p=4, m=2 GiB first, and, where that much memory is not available,
// t=3, p=4, m=64 MiB; these parameters keep the second option's memory
// but make fewer passes (2, not 3) over fewer lanes (2, not 4), so a
// login costs a small server less time and fewer threads, at about two
// thirds of that option's cost to an attacker per guess. A password is
// at least 12 characters.

const (
	argonTime    = 2
	argonMemory  = 64 * 1024
	argonThreads = 2
	argonKeyLen  = 32

	// MinPasswordLen is the shortest password accepted.
	MinPasswordLen = 12
)

// ErrBadPassword is returned by CheckPassword for a wrong password.
var ErrBadPassword = errors.New("wrong password")

// HashPassword returns the PHC string of password.
func HashPassword(password string) (string, error) {
	if len(password) < MinPasswordLen {
		return "", fmt.Errorf("a password needs at least %d characters", MinPasswordLen)
	}
	var salt [16]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt[:], argonTime, argonMemory, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		b64.EncodeToString(salt[:]), b64.EncodeToString(key)), nil
}

// CheckPassword compares password with the PHC string phc in constant
// time; ErrBadPassword when it differs, another error when phc is not a
// hash this code wrote (an empty one: the principal has no password).
func CheckPassword(phc, password string) error {
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return errors.New("no password set")
	}
	var version int
	var mem, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return errors.New("password hash: unknown version")
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &mem, &t, &p); err != nil || mem == 0 || mem > 1<<22 || t == 0 || t > 16 || p == 0 {
		return errors.New("password hash: bad parameters")
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(parts[4])
	want, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(salt) < 8 || len(want) < 16 || len(want) > 64 {
		return errors.New("password hash: malformed")
	}
	got := argon2.IDKey([]byte(password), salt, t, mem, p, uint32(len(want)))
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return ErrBadPassword
	}
	return nil
}

// TimingHash is a hash of no password, with the cost of HashPassword's:
// checking a login for an unknown name, or for a principal without a
// password, against it takes as long as checking a real one. Nothing
// hashes to it (its key is not the hash of any known password).
func TimingHash() string {
	b64 := base64.RawStdEncoding
	salt := []byte("coffer/timing/v1") // 16 bytes, like a real salt
	key := []byte("coffer/timing-hash/no-password/1")
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		b64.EncodeToString(salt), b64.EncodeToString(key[:argonKeyLen]))
}
