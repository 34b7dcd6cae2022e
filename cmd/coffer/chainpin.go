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
	"github.com/coffer-backup/coffer/internal/fsutil"
	"github.com/coffer-backup/coffer/internal/vault"
)

// filePin is an engine.ChainPin kept in $COFFER_HOME/chain/<vault ID>.json:
// the newest entry of each local vault's snapshot chain this machine has
// verified or written (docs/format.md §8.2). Kept beside the platform key
// rather than in the vault, so that someone who can rewrite the vault's
// directory (a shared disk, a synced folder) but not this machine's home
// cannot roll the snapshot list back unnoticed.
type filePin struct{ dir string }

var _ engine.ChainPin = filePin{}

type pinFile struct {
	Seq uint64 `json:"seq"`
	MAC string `json:"mac"`
}

func (p filePin) path(id vault.ID) string { return filepath.Join(p.dir, id.String()+".json") }

func (p filePin) Load(id vault.ID) (uint64, [32]byte, bool, error) {
	var mac [32]byte
	b, err := os.ReadFile(p.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, mac, false, nil
	}
	if err != nil {
		return 0, mac, false, err
	}
	var f pinFile
	if err := json.Unmarshal(b, &f); err != nil {
		return 0, mac, false, fmt.Errorf("%s: %w", p.path(id), err)
	}
	m, err := hex.DecodeString(f.MAC)
	if err != nil || len(m) != len(mac) || f.Seq == 0 {
		return 0, mac, false, fmt.Errorf("%s: not a snapshot-chain pin", p.path(id))
	}
	copy(mac[:], m)
	return f.Seq, mac, true, nil
}

func (p filePin) Save(id vault.ID, seq uint64, mac [32]byte) error {
	if seq == 0 {
		err := os.Remove(p.path(id))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return err
	}
	b, _ := json.Marshal(pinFile{Seq: seq, MAC: hex.EncodeToString(mac[:])})
	return fsutil.WriteFileSync(p.path(id), b, 0o600)
}

// chainPin returns this machine's snapshot-chain pins.
func (a *app) chainPin() (engine.ChainPin, error) {
	home, err := a.cofferHome()
	if err != nil {
		return nil, err
	}
	return filePin{dir: filepath.Join(home, "chain")}, nil
}
