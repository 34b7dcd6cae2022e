package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/coffer-backup/coffer/internal/format"
)

// Config returns the vault's decoded config (coffer cat config).
func (v *Vault) Config(ctx context.Context) (format.Config, error) {
	var c format.Config
	err := v.c.doJSON(ctx, http.MethodGet, v.path+"/cat/config", nil, &c)
	return c, err
}

// KeyringInfo returns the vault's current keyring generation without its
// secrets (coffer cat keyring).
func (v *Vault) KeyringInfo(ctx context.Context) (format.KeyringInfo, error) {
	var k format.KeyringInfo
	err := v.c.doJSON(ctx, http.MethodGet, v.path+"/cat/"+url.PathEscape("keyring"), nil, &k)
	return k, err
}
