// Package authn provides the vault server's bearer tokens and access
// rules: it generates and parses tokens, authenticates a request's
// Authorization header against the catalog, and decides with one role →
// permission table what an authenticated token may do.
package authn

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
)

// A token is "cft_" followed by its 32 secret bytes in unpadded base64url
// (RFC 4648 §5), 47 characters in all. The prefix lets secret scanners and
// people recognise a leaked Coffer token.
const (
	tokenPrefix = "cft_"
	secretSize  = 32 // 256 bits from a CSPRNG
	tokenLen    = len(tokenPrefix) + (secretSize*8+5)/6
	idSize      = 8 // 16 hex digits
)

var tokenEncoding = base64.RawURLEncoding.Strict()

// Secret is a bearer token as the user holds it. It prints as [redacted]
// (fmt, %v, slog): only an explicit string(s) reveals it, which the caller
// does once, to show a new token to its owner or to send it in a request.
type Secret string

func (Secret) String() string       { return "[redacted]" }
func (Secret) GoString() string     { return "[redacted]" }
func (Secret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Generate makes a new token from rand (crypto/rand.Reader; tests pass a
// fixed stream). It returns the token, the hash the catalog stores (the
// token itself is never stored), and a public ID for showing, logging and
// revoking the token.
func Generate(rand io.Reader) (token Secret, hash [32]byte, id string, err error) {
	var secret [secretSize]byte
	if _, err := io.ReadFull(rand, secret[:]); err != nil {
		return "", hash, "", fmt.Errorf("generate token: %w", err)
	}
	// The ID comes from bytes of its own: derived from the secret it would
	// be a public function of it, and 64 bits of a hash must not be
	// something logs carry next to the token's owner.
	var idBytes [idSize]byte
	if _, err := io.ReadFull(rand, idBytes[:]); err != nil {
		return "", hash, "", fmt.Errorf("generate token ID: %w", err)
	}
	return Secret(encodeSecret(secret)), hashSecret(secret), hex.EncodeToString(idBytes[:]), nil
}

// hashSecret is the one place a token's stored hash is computed.
//
// SHA-256 without salt or stretching is right here: the secret is 256
// random bits, so finding a token from its hash means searching 2^256
// secrets however fast the hash is. Slow, salted password hashes (Argon2,
// bcrypt) exist to protect low-entropy human passwords, which a token is
// not; they would add only CPU cost to every request and, being salted,
// rule out finding a token by its hash with one indexed lookup.
func hashSecret(secret [secretSize]byte) [32]byte { return sha256.Sum256(secret[:]) }

func encodeSecret(secret [secretSize]byte) string {
	return tokenPrefix + tokenEncoding.EncodeToString(secret[:])
}

// ParseToken checks that s is exactly a token, "cft_" and 43 characters of
// canonical unpadded base64url with no surrounding space, and returns the
// hash to look it up by. Its errors never contain s.
func ParseToken(s string) (hash [32]byte, err error) {
	secret, err := parseSecret(s)
	if err != nil {
		return hash, err
	}
	return hashSecret(secret), nil
}

func parseSecret(s string) (secret [secretSize]byte, err error) {
	// Errors describe the input's shape, never its characters: s may be a
	// real token with a typo, or another secret pasted by mistake.
	if len(s) != tokenLen {
		return secret, fmt.Errorf("malformed token: %d characters, want %d", len(s), tokenLen)
	}
	if s[:len(tokenPrefix)] != tokenPrefix {
		return secret, fmt.Errorf("malformed token: it does not start with %s", tokenPrefix)
	}
	body := s[len(tokenPrefix):]
	// Check the alphabet first: the decoder skips CR and LF, even in
	// strict mode.
	for i := 0; i < len(body); i++ {
		if !isBase64URL(body[i]) {
			return secret, fmt.Errorf("malformed token: character %d is not base64url", len(tokenPrefix)+i+1)
		}
	}
	// Strict decoding rejects set padding bits, so each secret has
	// exactly one spelling.
	n, err := tokenEncoding.Decode(secret[:], []byte(body))
	if err != nil || n != secretSize {
		return [secretSize]byte{}, fmt.Errorf("malformed token: not canonical base64url")
	}
	return secret, nil
}

func isBase64URL(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}
