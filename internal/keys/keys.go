// Package keys opens key providers by URI and remembers, per vault, how to
// reach a customer-managed key (docs/keys.md).
package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/coffer-backup/coffer/internal/fsutil"
	"github.com/coffer-backup/coffer/internal/keys/cloudkms"
	"github.com/coffer-backup/coffer/internal/keys/pkcs11"
	"github.com/coffer-backup/coffer/internal/keys/rsafile"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Open opens the key provider a URI names: rsa-file:///path/key.pem, an
// RFC 7512 pkcs11: URI, or a gocloud.dev/secrets URI of a cloud KMS key
// (awskms://, azurekeyvault://, gcpkms://, hashivault://).
func Open(uri string) (vault.KeyProvider, error) {
	return OpenContext(context.Background(), uri)
}

// OpenContext is Open with a context, which bounds what opening a cloud
// KMS provider does (finding credentials may ask a metadata server).
func OpenContext(ctx context.Context, uri string) (vault.KeyProvider, error) {
	scheme, _, _ := strings.Cut(uri, ":")
	switch scheme {
	case "rsa-file":
		path, err := rsafile.ParseURI(uri)
		if err != nil {
			return nil, err
		}
		p, err := rsafile.Open(path)
		if err != nil {
			return nil, err // not a nil *Provider in a non-nil interface
		}
		return p, nil
	case "pkcs11":
		p, err := pkcs11.Open(uri)
		if err != nil {
			return nil, err
		}
		return p, nil
	case cloudkms.AWSKMS, cloudkms.AzureKeyVault, cloudkms.GCPKMS, cloudkms.HashiVault:
		p, err := cloudkms.Open(ctx, uri)
		if err != nil {
			return nil, err
		}
		return p, nil
	}
	return nil, fmt.Errorf("key URI %s: unknown scheme %q (want rsa-file:///path, pkcs11:…, awskms://, azurekeyvault://, gcpkms:// or hashivault://)", Redact(uri), scheme)
}

var pinValue = regexp.MustCompile(`(?i)(pin-value=)[^&;]*`)

// Redact hides secrets a key URI may hold (a PKCS#11 pin-value, a
// password in user info or, in a cloud KMS URI, in a URL parameter) so
// that it can be shown or logged.
func Redact(uri string) string {
	if scheme, _, _ := strings.Cut(uri, ":"); cloudkms.IsScheme(scheme) {
		return cloudkms.Redact(uri)
	}
	s := pinValue.ReplaceAllString(uri, "${1}REDACTED")
	if u, err := url.Parse(s); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "REDACTED")
			s = u.String()
		}
	}
	return s
}

// Config is where a machine keeps, for each vault wrapped by a customer
// key, the URI that reaches the key: the store names the key (provider,
// key ID, version) but not how to get to it (a module path, a PIN, KMS
// credentials), which does not belong in the store. One file per vault,
// named by the vault's ID, mode 0600, in a directory beside the platform
// key file.
type Config struct {
	Dir string
}

type configFile struct {
	// URIs maps "provider key-id" to the URI reaching that key. A vault
	// switched from one customer key to another keeps both until the
	// switch is complete, so a crash in between leaves it openable.
	URIs map[string]string `json:"uris"`
}

func refKey(r vault.KeyRef) string { return r.Provider + " " + r.KeyID }

func (c Config) path(vaultID vault.ID) string { return filepath.Join(c.Dir, vaultID.String()+".json") }

func (c Config) read(vaultID vault.ID) (configFile, error) {
	var f configFile
	b, err := os.ReadFile(c.path(vaultID))
	if errors.Is(err, fs.ErrNotExist) {
		return configFile{URIs: map[string]string{}}, nil
	}
	if err != nil {
		return f, err
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("key configuration %s: %w", c.path(vaultID), err)
	}
	if f.URIs == nil {
		f.URIs = map[string]string{}
	}
	return f, nil
}

// URI returns the URI recorded for the key kek of vault vaultID.
func (c Config) URI(vaultID vault.ID, kek vault.KeyRef) (string, error) {
	f, err := c.read(vaultID)
	if err != nil {
		return "", err
	}
	uri, ok := f.URIs[refKey(kek)]
	if !ok {
		return "", fmt.Errorf("%w: this vault's keys are wrapped by the customer-managed key %s, and this machine has no URI for it in %s: run `coffer key use-cmk URI` with the key's URI",
			vault.ErrKeyUnavailable, kek, c.path(vaultID))
	}
	return uri, nil
}

// Set records uri as the way to reach kek for vault vaultID.
func (c Config) Set(vaultID vault.ID, kek vault.KeyRef, uri string) error {
	f, err := c.read(vaultID)
	if err != nil {
		return err
	}
	f.URIs[refKey(kek)] = uri
	return c.write(vaultID, f)
}

// Keep forgets every URI of vault vaultID but kek's (after a switch).
func (c Config) Keep(vaultID vault.ID, kek vault.KeyRef) error {
	f, err := c.read(vaultID)
	if err != nil {
		return err
	}
	for k := range f.URIs {
		if k != refKey(kek) {
			delete(f.URIs, k)
		}
	}
	return c.write(vaultID, f)
}

func (c Config) write(vaultID vault.ID, f configFile) error {
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(f, "", "  ")
	return fsutil.WriteFileSync(c.path(vaultID), b, 0o600)
}
