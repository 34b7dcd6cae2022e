//go:build !linux

package srcvol

import (
	"context"
	"errors"
	"runtime"

	"github.com/coffer-backup/coffer/internal/vault"
)

func (d Detector) detect(ctx context.Context, path string, depth int) vault.SourceVolume {
	return unknown(vault.SourceVolume{}, "not supported on %s", runtime.GOOS)
}

func fscryptPolicy(p string) (string, int, error) { return p, 0, errors.New("not supported") }

func zfsEncryption(context.Context, string) (string, error) {
	return "", errors.New("not supported on " + runtime.GOOS)
}
