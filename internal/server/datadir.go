package server

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/coffer-backup/coffer/internal/audit"
	"github.com/coffer-backup/coffer/internal/tlsconf"
)

// checkPrivate refuses a data directory that other users of the machine
// may enter, or whose key directories or secret files they may read or
// write: they hold the platform key, the audit signing key, the TLS keys
// and the catalog (token and password hashes). The server does not fix
// modes itself: a loose mode means someone else may already have read
// or replaced a key, which its operator must know.
func checkPrivate(dataDir string) error {
	var secrets []string
	for _, d := range []string{"", "keys", "audit", "tls"} {
		secrets = append(secrets, filepath.Join(dataDir, d))
	}
	secrets = append(secrets, catalogFile(dataDir), InitialTokenFile(dataDir),
		filepath.Join(auditDir(dataDir), audit.SigningKeyFile),
		filepath.Join(dataDir, "tls", tlsconf.CAKeyName), filepath.Join(dataDir, "tls", tlsconf.KeyName))
	if es, err := os.ReadDir(filepath.Dir(keyFile(dataDir))); err == nil {
		for _, e := range es {
			secrets = append(secrets, filepath.Join(filepath.Dir(keyFile(dataDir)), e.Name()))
		}
	}
	for _, p := range secrets {
		st, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
		if perm := st.Mode().Perm(); perm&0o077 != 0 {
			want := "0600"
			if st.IsDir() {
				want = "0700"
			}
			return fmt.Errorf("%s has mode %04o: other users of this machine may read or replace the server's keys; "+
				"make it private to the server's user (chmod %s %s), check that nobody else changed the keys in it, then start again", p, perm, want, p)
		}
	}
	return nil
}
