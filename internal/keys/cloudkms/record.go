package cloudkms

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Alg names the wrapping construction of docs/format.md §1.1c: the KMS
// encrypts a fresh intermediate key K through gocloud.dev/secrets, and K
// seals the secret with AES-256-GCM, which binds the AAD.
const Alg = "gocloud-kms+aes-256-gcm"

const (
	recordVersion = 0x01
	// adPrefix domain-separates this construction's GCM additional data
	// from every other use of AES-GCM in Coffer.
	adPrefix = "coffer/v1/"
	// maxKMSCiphertext is the largest KMS ciphertext a record holds (its
	// length is a uint16). Real ones are far smaller: AWS about 180 bytes
	// for a 32-byte plaintext, an RSA-4096 Azure key 512, Vault transit
	// about 90.
	maxKMSCiphertext = 0xffff
	// sealedSize is the GCM part: a 32-byte secret and its tag.
	sealedSize = seal.KeySize + seal.Overhead
)

// errMalformed marks records that are not in the format at all.
var errMalformed = errors.New("malformed record")

// additionalData is the GCM additional data:
//
//	"coffer/v1/" || Alg || 0x00 || provider || 0x00 || key ID || 0x00 || version || 0x00 || aad
//
// Binding the key reference makes a record open only under the key it
// names: AWS KMS, for one, decrypts with whatever key its ciphertext
// names, so a record relabelled with another key's reference would
// otherwise still open wherever both keys are usable. No field before aad
// holds a NUL (parse refuses control characters; newProvider checks), so
// the encoding is unambiguous.
func additionalData(ref vault.KeyRef, aad []byte) []byte {
	b := make([]byte, 0, len(adPrefix)+len(Alg)+len(ref.Provider)+len(ref.KeyID)+len(ref.Version)+4+len(aad))
	b = append(b, adPrefix...)
	b = append(b, Alg...)
	b = append(b, 0)
	b = append(b, ref.Provider...)
	b = append(b, 0)
	b = append(b, ref.KeyID...)
	b = append(b, 0)
	b = append(b, ref.Version...)
	b = append(b, 0)
	return append(b, aad...)
}

// record is a parsed wrapped-key record.
type record struct {
	kmsCiphertext []byte // E: the KMS's ciphertext of K, opaque
	sealed        []byte // C: AES-256-GCM(K, 0^12, secret, ad)
}

// marshal encodes r: 0x01 || uint16 BE len(E) || E || C.
func (r record) marshal() []byte {
	out := make([]byte, 0, 3+len(r.kmsCiphertext)+len(r.sealed))
	out = append(out, recordVersion)
	out = binary.BigEndian.AppendUint16(out, uint16(len(r.kmsCiphertext)))
	out = append(out, r.kmsCiphertext...)
	return append(out, r.sealed...)
}

// parseRecord splits data into its parts, which alias data. It accepts
// exactly what marshal produces for a KMS ciphertext of 1 to 65535 bytes
// and a 48-byte sealed part.
func parseRecord(data []byte) (record, error) {
	if len(data) < 3+1+sealedSize {
		return record{}, fmt.Errorf("%w: %d bytes", errMalformed, len(data))
	}
	if data[0] != recordVersion {
		return record{}, fmt.Errorf("%w: version byte 0x%02x, want 0x%02x", errMalformed, data[0], recordVersion)
	}
	n := int(binary.BigEndian.Uint16(data[1:3]))
	if n == 0 || len(data) != 3+n+sealedSize {
		return record{}, fmt.Errorf("%w: %d bytes for a %d-byte KMS ciphertext", errMalformed, len(data), n)
	}
	return record{kmsCiphertext: data[3 : 3+n], sealed: data[3+n:]}, nil
}
