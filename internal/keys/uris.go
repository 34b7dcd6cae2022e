package keys

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

// URIs is where a server keeps the URIs of customer-managed keys: a
// directory of its own (Config), or the catalog servers share
// (CatalogURIs).
type URIs interface {
	// URI returns the URI recorded for the key kek of vault vaultID.
	URI(vaultID vault.ID, kek vault.KeyRef) (string, error)
	// Set records uri as the way to reach kek for vault vaultID.
	Set(vaultID vault.ID, kek vault.KeyRef, uri string) error
	// Keep forgets every URI of vault vaultID but kek's.
	Keep(vaultID vault.ID, kek vault.KeyRef) error
}

var (
	_ URIs = Config{}
	_ URIs = CatalogURIs{}
)

// LabelURISeal is the HKDF label of the key that seals customer-key URIs
// in a shared catalog, derived from the deployment key (docs/format.md
// §1.1e); it also starts each sealed URI's AAD.
const LabelURISeal = "coffer/v1/key-uri-seal"

// URIRows is where a shared catalog keeps sealed URIs (vault.Deployment
// provides it).
type URIRows interface {
	KeyURIs(ctx context.Context, vault vault.ID) (map[string][]byte, error)
	SetKeyURI(ctx context.Context, vault vault.ID, kek string, sealed []byte) error
	KeepKeyURI(ctx context.Context, vault vault.ID, kek string) error
}

// CatalogURIs keeps customer-key URIs in a shared catalog, each sealed
// (a URI may hold a PIN) under a key derived from the deployment key and
// bound to its vault and key, so that every server of the deployment
// reaches a vault's key whichever server recorded it.
type CatalogURIs struct {
	Rows URIRows
	// Key is seal.Derive(deployment key, nil, LabelURISeal)
	// (NewCatalogURIs).
	Key seal.Key
}

// NewCatalogURIs returns the URIs kept in rows, sealed under a key
// derived from deploymentKey.
func NewCatalogURIs(rows URIRows, deploymentKey seal.Key) CatalogURIs {
	return CatalogURIs{Rows: rows, Key: seal.Derive(deploymentKey, nil, LabelURISeal)}
}

const uriSealVersion = 0x01

func uriAAD(vaultID vault.ID, kek string) []byte {
	b := append([]byte(LabelURISeal), 0)
	b = append(b, vaultID[:]...)
	return append(b, kek...)
}

// seal: 0x01 || salt (32) || AES-256-GCM(HKDF(Key, salt, label), 0^12,
// uri, aad): a key per URI, so the zero nonce is used once.
func (c CatalogURIs) seal(vaultID vault.ID, kek, uri string) []byte {
	out := make([]byte, 1+32, 1+32+len(uri)+seal.Overhead)
	out[0] = uriSealVersion
	rand.Read(out[1:33])
	k := seal.Derive(c.Key, out[1:33], LabelURISeal)
	defer k.Wipe()
	var nonce [seal.NonceSize]byte
	return seal.NewAEAD(k).Seal(out, nonce[:], []byte(uri), uriAAD(vaultID, kek))
}

func (c CatalogURIs) open(vaultID vault.ID, kek string, b []byte) (string, error) {
	if len(b) < 1+32+seal.Overhead || b[0] != uriSealVersion {
		return "", fmt.Errorf("%w: the catalog's URI of key %s for vault %s is malformed", vault.ErrWrongKey, kek, vaultID)
	}
	k := seal.Derive(c.Key, b[1:33], LabelURISeal)
	defer k.Wipe()
	var nonce [seal.NonceSize]byte
	pt, err := seal.NewAEAD(k).Open(nil, nonce[:], b[33:], uriAAD(vaultID, kek))
	if err != nil {
		// SECURITY: a URI a catalog writer made or moved from another
		// vault or key does not open: the server never reaches a key, a
		// module or a file of their choosing through it.
		return "", fmt.Errorf("%w: the catalog's URI of key %s for vault %s does not open under this server's deployment key (written by someone without it, or moved from another vault or key)", vault.ErrWrongKey, kek, vaultID)
	}
	return string(pt), nil
}

func uriCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// URI implements URIs.
func (c CatalogURIs) URI(vaultID vault.ID, kek vault.KeyRef) (string, error) {
	ctx, cancel := uriCtx()
	defer cancel()
	m, err := c.Rows.KeyURIs(ctx, vaultID)
	if err != nil {
		return "", err
	}
	b, ok := m[refKey(kek)]
	if !ok {
		return "", fmt.Errorf("%w: this vault's keys are wrapped by the customer-managed key %s, and the catalog has no URI for it: run `coffer key use-cmk URI` with the key's URI",
			vault.ErrKeyUnavailable, kek)
	}
	return c.open(vaultID, refKey(kek), b)
}

// Set implements URIs.
func (c CatalogURIs) Set(vaultID vault.ID, kek vault.KeyRef, uri string) error {
	if uri == "" {
		return errors.New("record key URI: empty URI")
	}
	ctx, cancel := uriCtx()
	defer cancel()
	return c.Rows.SetKeyURI(ctx, vaultID, refKey(kek), c.seal(vaultID, refKey(kek), uri))
}

// Keep implements URIs.
func (c CatalogURIs) Keep(vaultID vault.ID, kek vault.KeyRef) error {
	ctx, cancel := uriCtx()
	defer cancel()
	return c.Rows.KeepKeyURI(ctx, vaultID, refKey(kek))
}
