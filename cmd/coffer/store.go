package main

import (
	"context"
	"path"

	"github.com/coffer-backup/coffer/internal/store/s3"
	"github.com/coffer-backup/coffer/internal/vault"
)

// storeOpener parses a server's --store URL into the function that opens
// each vault's store under it; nil for "" (the local stores under the data
// directory). It reaches the bucket once, so that a wrong endpoint,
// bucket or credentials stop the server at its start.
func storeOpener(ctx context.Context, raw string) (func(context.Context, string) (vault.Store, error), error) {
	if raw == "" {
		return nil, nil
	}
	opt, err := s3.ParseURL(raw)
	if err != nil {
		return nil, err
	}
	probe, err := s3.Open(ctx, opt)
	if err != nil {
		return nil, err
	}
	probe.Close()
	return func(ctx context.Context, name string) (vault.Store, error) {
		o := opt
		o.Prefix = path.Join(opt.Prefix, "vaults", name)
		return s3.Open(ctx, o)
	}, nil
}
