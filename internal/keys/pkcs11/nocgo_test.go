//go:build !cgo

package pkcs11

import (
	"errors"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/vault"
)

func TestOpenWithoutCgo(t *testing.T) {
	_, err := Open("pkcs11:token=coffer;object=backup-kek?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=" + testPIN)
	if !errors.Is(err, vault.ErrKeyUnavailable) || !strings.Contains(err.Error(), "cgo") || strings.Contains(err.Error(), testPIN) {
		t.Fatalf("Open: %v", err)
	}
}
