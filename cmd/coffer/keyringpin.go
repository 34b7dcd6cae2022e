package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/fsutil"
	"github.com/coffer-backup/coffer/internal/vault"
)

// keyringFilePin is an engine.KeyringPin kept in
// $COFFER_HOME/keyring/<vault ID>.json: the newest keyring generation of
// each local vault this machine has verified or written, its MAC and the
// vault's root commitment (docs/format.md §7.3, "The keyring pin"). Kept
// beside the platform key rather than in the vault, so that someone who
// can rewrite the vault's directory (store and catalog together) cannot
// put an older keyring back unnoticed.
type keyringFilePin struct{ dir string }

var _ engine.KeyringPin = keyringFilePin{}

type keyringPinFile struct {
	Generation uint64 `json:"generation"`
	MAC        string `json:"mac"`
	RootCommit string `json:"root_commit"`
}

func (p keyringFilePin) path(id vault.ID) string {
	return filepath.Join(p.dir, id.String()+".json")
}

func (p keyringFilePin) LoadKeyring(id vault.ID) (engine.PinnedKeyring, bool, error) {
	var out engine.PinnedKeyring
	b, err := os.ReadFile(p.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return out, false, nil
	}
	if err != nil {
		return out, false, err
	}
	var f keyringPinFile
	if err := json.Unmarshal(b, &f); err != nil {
		return out, false, fmt.Errorf("%s: %w", p.path(id), err)
	}
	m, merr := hex.DecodeString(f.MAC)
	c, cerr := hex.DecodeString(f.RootCommit)
	// SECURITY: a damaged pin is an error, never "nothing pinned": the
	// vault is then refused until the pin is restored or removed by hand.
	if merr != nil || cerr != nil || len(m) != format.MACSize || len(c) != format.MACSize || f.Generation == 0 {
		return out, false, fmt.Errorf("%s: not a keyring pin (damaged?): restore it from a copy, or remove it to pin the vault's keyring as it is now", p.path(id))
	}
	out.Generation = f.Generation
	copy(out.MAC[:], m)
	copy(out.RootCommit[:], c)
	return out, true, nil
}

func (p keyringFilePin) SaveKeyring(id vault.ID, k engine.PinnedKeyring) error {
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return err
	}
	b, _ := json.Marshal(keyringPinFile{Generation: k.Generation, MAC: hex.EncodeToString(k.MAC[:]), RootCommit: hex.EncodeToString(k.RootCommit[:])})
	return fsutil.WriteFileSync(p.path(id), b, 0o600)
}

// keyringPin returns this machine's keyring pins.
func (a *app) keyringPin() (engine.KeyringPin, error) {
	home, err := a.cofferHome()
	if err != nil {
		return nil, err
	}
	return keyringFilePin{dir: filepath.Join(home, "keyring")}, nil
}
