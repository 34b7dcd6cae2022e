// Package pkcs11 provides a vault.KeyProvider whose key encryption key
// (KEK) is a key object inside a PKCS#11 token (an HSM; SoftHSM2 in tests),
// used through github.com/ThalesGroup/crypto11. The key never leaves the
// token: every private- or secret-key operation runs inside it, and the
// provider holds nothing secret from it (only the RSA public key, the key's
// identity and the PIN it was given).
//
// The key is named by an RFC 7512 URI (see ParseURI), for example
//
//	pkcs11:token=coffer;object=backup-kek?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/coffer/pin
//
// # Keys and key references
//
// An RSA private key (2048 bits or more; 3072 recommended) or an AES-256
// secret key. KeyRef.Provider is "pkcs11"; KeyRef.KeyID is
// "token=<label>;object=<label>" (the object's CKA_LABEL as read from the
// token, or ";id=<CKA_ID>" for an unlabelled object; RFC 7512
// percent-encoding; never the PIN or the module path). KeyRef.Version
// identifies the key material, so a key object replaced under the same
// label is noticed:
//
//   - RSA: the first 16 hex digits of SHA-256 over the public key's DER
//     SubjectPublicKeyInfo.
//   - AES: the hex CKA_CHECK_VALUE (PKCS#11 v2.40: the first 3 bytes of
//     the key's AES-ECB encryption of a zero block, a standard key check
//     value), or "id-<hex CKA_ID>" from a token that does not report one.
//     CKA_ID alone would not do: it is a name an operator assigns and
//     survives replacing the key.
//
// # Wrapped-key records
//
// A 32-byte secret is wrapped as follows (|| is concatenation, aad the
// caller's additional data).
//
// RSA, Alg "pkcs11-rsa-oaep-sha256" or "pkcs11-rsa-oaep-sha1" (H is SHA-256
// or SHA-1; the record says which, and Unwrap uses what it says):
//
//	K    = 32 random bytes, fresh for every wrap
//	E    = RSA-OAEP-Encrypt(public key, hash H, MGF1-H, empty label, K)   k bytes, k = modulus size
//	ad   = "coffer/v1/" || Alg || 0x00 || aad
//	C    = AES-256-GCM(key K, nonce 0^12, plaintext secret, additional data ad)   48 bytes
//	Data = 0x01 || uint16 big-endian k || E || C
//
// The AAD is bound by the GCM step, not by the OAEP label, because tokens
// rarely support labels: SoftHSM2 2.6 fails any non-empty label with
// CKR_GENERAL_ERROR. E is computed in software from the public key; Wrap
// then has the token decrypt E (CKM_RSA_PKCS_OAEP) and checks that it gets
// K back, so a wrap succeeds only when the token can unwrap it again. Wrap
// tries SHA-256 first; when the token rejects it (CKR_ARGUMENTS_BAD,
// CKR_MECHANISM_INVALID or CKR_MECHANISM_PARAM_INVALID) it falls back to
// SHA-1 (OAEP's security does not rest on collision resistance, so SHA-1
// is still sound there) and keeps that choice for the provider's life.
// SoftHSM2 2.6 supports OAEP only with SHA-1 and MGF1-SHA1.
//
// As with any public-key wrapping, whoever has the public key can make a
// record that unwraps: an RSA record proves confidentiality, not origin.
//
// AES, Alg "pkcs11-aes-gcm":
//
//	N    = 12 random bytes
//	ad   = "coffer/v1/pkcs11-aes-gcm" || 0x00 || aad
//	C    = CKM_AES_GCM in the token (IV N, 128-bit tag, AAD ad) of secret   48 bytes
//	Data = 0x01 || N || C
//
// CKM_AES_KEY_WRAP_PAD is not used: SoftHSM2 (and most tokens) offer it
// only for C_WrapKey of key objects, which crypto11 does not expose, and it
// cannot bind an AAD.
//
// Unwrap fails with vault.ErrKeyUnavailable when the record's KEK names
// another provider, or another version of this key than the token holds
// (the object was replaced); with vault.ErrWrongKey when it names another
// key (KeyID), is malformed (wrong leading byte, wrong length, an OAEP
// block whose length is not the key's modulus size), names an algorithm
// this key cannot use, or does not authenticate (OAEP decoding, the GCM
// tag). Because tokens report a bad
// OAEP block or GCM tag with the same code as a fault (SoftHSM2:
// CKR_GENERAL_ERROR), a failure inside the token is followed by a probe
// that wraps and unwraps a random value with the same key: if the probe
// works, the record is at fault (ErrWrongKey); if not, the key is
// (vault.ErrKeyUnavailable).
//
// # Sessions, revocation and recovery
//
// Every Wrap and Unwrap opens its own crypto11 context: that loads and
// initialises the module unless another context in the process has it
// loaded, logs in with the PIN (reading pin-source again), finds the key
// object by label and id, checks it is the key of Current, uses it and
// closes the context, which finalises and unloads the module when it was
// the last one. Nothing is cached across calls, because nothing cached
// survives revocation: crypto11 keeps a logged-in session and a session
// pool per context and never replaces a broken session; object handles go
// stale when an object is deleted and restored; SoftHSM2 marks a token
// whose directory disappeared as invalid until the module is finalised,
// even after the directory is back; and changing a PIN does not log out a
// session that is logged in. So a deleted key object, an unreachable token
// or a changed PIN makes the next call fail with vault.ErrKeyUnavailable
// (naming the token and the key, and saying what to do), and the first
// call after access is back works, with no repair step. The price is a
// module initialisation and a login per call (about 5 ms with SoftHSM2;
// more with a network HSM's client); opening a vault unwraps a handful of
// keys.
//
// Two limits follow from PKCS#11 state being per process. A module stays
// initialised while any context on it is open, so concurrent calls share
// one initialisation and login (calls on one Provider are serialised). And
// a PIN the token rejected is not tried again by that Provider: real HSMs
// lock the PIN after a few failures, and a backup run makes many calls.
// With pin-source, putting the new PIN into the file is enough (it is read
// at every call); with pin-value, open a new Provider.
//
// # Builds without cgo
//
// PKCS#11 modules are C libraries, so the provider needs cgo. In a build
// without it (CGO_ENABLED=0) the package still compiles: ParseURI works,
// and Open fails with vault.ErrKeyUnavailable saying why.
package pkcs11

// Name is the provider name recorded in key references.
const Name = "pkcs11"

// Wrapping algorithms recorded in vault.WrappedKey.Alg. The package comment
// gives each construction byte by byte.
const (
	AlgRSAOAEPSHA256 = "pkcs11-rsa-oaep-sha256"
	AlgRSAOAEPSHA1   = "pkcs11-rsa-oaep-sha1"
	AlgAESGCM        = "pkcs11-aes-gcm"
)
