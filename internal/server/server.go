// Package server is the vault server: the vault engine behind an HTTPS API
// (docs/openapi.yaml). Every route declares the permission it needs; the
// one authorization point, handle, checks it before the handler runs.
//
// Agents never receive a data key. They fetch the chunk-ID key and the
// chunker seed (to deduplicate), upload encoded (compressed, unsealed)
// blobs, and the server verifies each blob's ID before the engine seals
// it. Downloads are unsealed on the server and verified by the agent.
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/audit"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/catalog/sqlite"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/fsutil"
	"github.com/coffer-backup/coffer/internal/keys"
	"github.com/coffer-backup/coffer/internal/keys/platform"
	"github.com/coffer-backup/coffer/internal/posture"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/store/local"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Options configure a Server.
type Options struct {
	// DataDir holds the catalog, the platform key, the vaults' stores and
	// the TLS material.
	DataDir string
	Logger  *slog.Logger
	Now     func() time.Time
	// KeyTTL bounds how long a vault's unwrapped keys stay in memory
	// (DefaultKeyTTL when 0; never dropped while open when negative).
	KeyTTL time.Duration
	// KEKRotation is how old the platform key may get before the server
	// rotates it (DefaultKEKRotation when 0; never when negative).
	KEKRotation time.Duration
	// PKCS11Modules are the PKCS#11 modules a customer-key URI may name:
	// a key manager must not make the server load any other library.
	PKCS11Modules []string
	// KeyDirs are the directories a customer-key URI may read files from
	// (rsa-file keys, pin-source files).
	KeyDirs []string
	// CheckPassword checks a login's password against a stored hash
	// (authn.CheckPassword when nil). Tests set it to watch the hashes
	// logins compute.
	CheckPassword func(phc, password string) error
	// BodyTimeout bounds the time a request to a public route (a login)
	// may take to send its body, before anyone knows who sends it
	// (DefaultBodyTimeout when 0).
	BodyTimeout time.Duration
	// RetentionAt is the time of day ("HH:MM", in Location) of the daily
	// run that applies the vaults' stored retention policies
	// (DefaultRetentionAt when empty).
	RetentionAt string
	// Location is the server's time zone for RetentionAt: UTC when nil,
	// never time.Local implicitly (coffer server passes time.Local).
	Location *time.Location
	// OpenStore, when set, opens vault name's store (coffer server --store
	// s3://…: each vault under its own prefix) in place of the local one
	// under DataDir/vaults/NAME/store. The catalog, the keys and an empty
	// DataDir/vaults/NAME directory (how the server finds its vaults) stay
	// in DataDir.
	OpenStore func(ctx context.Context, name string) (vault.Store, error)
	// Posture is the policy posture reports hold the vaults to (the
	// recovery point objective, key and check ages); zero fields take
	// posture's defaults (docs/posture.md).
	Posture posture.Policy
	// Catalog is a postgres:// URL of the catalog's database, which
	// several servers may share (docs/postgres.md); "" for the SQLite
	// file in DataDir.
	Catalog string
	// DeploymentKey is the file holding the deployment key, under which a
	// shared catalog keeps the platform key (docs/postgres.md): every
	// server sharing the catalog is given the same one.
	// DataDir/keys/deployment.key when "".
	DeploymentKey string
}

// Server serves the vaults under one data directory.
type Server struct {
	opt  Options
	log  *slog.Logger
	cat  Catalog
	keys *platform.Keystore
	uris keys.URIs // customer-key URIs on a shared catalog; nil: keyConfig's directory
	// storeSeal seals vaults' own store URLs in a shared catalog (nil
	// without one: they are files of the data directory).
	storeSeal *storeURLSeal
	auth      *authn.Authenticator
	metrics   *metrics

	mu     sync.Mutex
	vaults map[string]*openVault

	counts treeCountCache // what trees expand to (history.go checkCounts)

	audit   *audit.Log // the tamper-evident audit log (audit.go)
	auditVK string     // its checkpoints' verifier key (public)
	// auditSigner signs the audit checkpoints and the posture reports.
	auditSigner note.Signer
	// tlsConfig is the configuration Serve runs with, for the posture
	// report's TLS checks.
	tlsConfig  atomic.Pointer[tls.Config]
	postureDay dayBook        // the day each vault's posture was last recorded
	jobs       jobSkips       // since when each background job was found running elsewhere
	writers    writerSessions // remote backups' sessions (sessions.go)
	limiter    limiter        // failed authentications per address (limits.go)
	anon       limiter        // requests without a token, per address
	plimiter   limiter        // failed logins per principal, from addresses it did not log in from
	known      knownAddrs     // addresses each principal logged in from
	pwSlots    chan struct{}  // password hashes running (limits.go)
	refusals   refusalBook    // refused requests counted for the audit log (auditsum.go)
	decodes    *byteBudget    // bytes uploads hold decoding blobs (limits.go)
	reads      readBook       // bulk reads and probes counted for the audit log (readsum.go)
	getQuota   tokenBudget    // successful reads audited one by one, per token (readsum.go)

	reqSeq atomic.Uint64

	retentionAt time.Duration // Options.RetentionAt parsed: since midnight
	retire      retireState   // platform key versions to delete (kekretire.go)
	lockSweep   atomic.Int64  // when keepObjectLocks last ran, Unix ns (objectlock.go)
	lockPending pendingLocks  // vaults whose upkeep waits for another server's (objectlock.go)
}

type openVault struct {
	eng   *engine.Vault
	store vault.Store
	// Object Lock (objectlock.go): the retention period of new objects in
	// nanoseconds (0: none, <0: unknown).
	lock atomic.Int64
}

// close closes the engine, its store and its key provider (a cloud KMS
// client's connections), when nobody uses them any more.
func (ov *openVault) close() {
	p := ov.eng.KeyProvider()
	ov.eng.Close()
	ov.store.Close()
	if c, ok := p.(io.Closer); ok {
		c.Close()
	}
}

// Paths under the data directory.
func catalogFile(dir string) string { return filepath.Join(dir, "catalog.db") }
func keyFile(dir string) string     { return filepath.Join(dir, "keys", "platform.key") }
func seenFile(dir string) string    { return filepath.Join(dir, "keys", "platform.seen") }

// DeploymentKeyFile is where a server on a shared catalog keeps the
// deployment key unless told otherwise (Options.DeploymentKey).
func DeploymentKeyFile(dir string) string { return filepath.Join(dir, "keys", "deployment.key") }

// openPlatformKey opens the platform key: the key file in the data
// directory (made on first use), or, on a catalog servers share
// (PostgreSQL), the versions the catalog keeps sealed under the
// deployment key. The first server on such a catalog makes the
// deployment key file, unless given one, and stores the platform key in
// the catalog: the versions of the data directory's key file when it has
// one (servers that shared a data directory before), else a new key.
func openPlatformKey(ctx context.Context, opt Options, cat Catalog) (*platform.Keystore, keys.URIs, *storeURLSeal, error) {
	d, shared := cat.(vault.Deployment)
	if opt.Catalog == "" || !shared {
		ks, err := openKeyFile(opt)
		return ks, nil, nil, err
	}
	ks, dk, err := openSharedKey(ctx, opt, d)
	if err != nil {
		return nil, nil, nil, err
	}
	defer dk.Wipe()
	return ks, sharedURIs{cat: keys.NewCatalogURIs(d, dk), file: keys.Config{Dir: filepath.Join(opt.DataDir, "keys", "cmk")}}, newStoreURLSeal(dk), nil
}

// openKeyFile opens the platform key file in the data directory, making
// it on first use.
func openKeyFile(opt Options) (*platform.Keystore, error) {
	ks, err := platform.Open(keyFile(opt.DataDir))
	if errors.Is(err, vault.ErrKeyUnavailable) {
		if _, serr := os.Stat(keyFile(opt.DataDir)); errors.Is(serr, fs.ErrNotExist) {
			if err := os.MkdirAll(filepath.Dir(keyFile(opt.DataDir)), 0o700); err != nil {
				return nil, err
			}
			ks, err = platform.Create(keyFile(opt.DataDir), opt.Now())
		}
	}
	return ks, err
}

// openSharedKey opens the platform key kept in a shared catalog, and
// returns it with the deployment key (the caller wipes it).
func openSharedKey(ctx context.Context, opt Options, d vault.Deployment) (*platform.Keystore, seal.Key, error) {
	var none seal.Key
	if err := os.MkdirAll(filepath.Dir(seenFile(opt.DataDir)), 0o700); err != nil {
		return nil, none, err
	}
	dkPath := opt.DeploymentKey
	if dkPath == "" {
		dkPath = DeploymentKeyFile(opt.DataDir) // checkPrivate checked it
	} else if st, err := os.Stat(dkPath); err == nil && st.Mode().Perm()&0o077 != 0 {
		return nil, none, fmt.Errorf("deployment key %s has mode %04o: other users of this machine may read it, and with a copy of the catalog the platform key: make it private to the server's user (chmod 0600 %s), then start again", dkPath, st.Mode().Perm(), dkPath)
	}
	rows, err := d.PlatformKeys(ctx)
	if err != nil {
		return nil, none, fmt.Errorf("platform key: %w", err)
	}
	first := len(rows) == 0
	dk, _, err := platform.LoadDeploymentKey(dkPath, first && opt.DeploymentKey == "")
	if err != nil {
		if first {
			return nil, none, fmt.Errorf("platform key: %w", err)
		}
		return nil, none, fmt.Errorf("platform key: %w: the catalog keeps the platform key sealed under the deployment key every server sharing it is given: copy %s from a server of this deployment (mode 0600), or name it with --deployment-key", err, DeploymentKeyFile("DATA"))
	}
	var ks *platform.Keystore
	if !first {
		ks, err = platform.OpenCatalog(d, dk, seenFile(opt.DataDir))
	} else {
		var from *platform.Keystore
		if _, serr := os.Stat(keyFile(opt.DataDir)); serr == nil {
			// Servers that shared this data directory: their vaults are
			// wrapped under the key file's versions, which move into the
			// catalog with their IDs and times.
			if from, err = platform.Open(keyFile(opt.DataDir)); err != nil {
				dk.Wipe()
				return nil, none, err
			}
		}
		ks, err = platform.CreateInCatalog(d, dk, seenFile(opt.DataDir), from, opt.Now())
	}
	if err != nil {
		dk.Wipe()
		return nil, none, err
	}
	return ks, dk, nil
}

// sharedURIs keeps customer-key URIs in the shared catalog; a URI found
// only in the data directory (recorded by a release that kept it there)
// is copied into the catalog when first read.
type sharedURIs struct {
	cat  keys.CatalogURIs
	file keys.Config
}

func (u sharedURIs) URI(id vault.ID, kek vault.KeyRef) (string, error) {
	uri, err := u.cat.URI(id, kek)
	if !errors.Is(err, vault.ErrKeyUnavailable) {
		return uri, err
	}
	if old, ferr := u.file.URI(id, kek); ferr == nil {
		if serr := u.cat.Set(id, kek, old); serr != nil {
			return "", serr
		}
		return old, nil
	}
	return "", err
}

func (u sharedURIs) Set(id vault.ID, kek vault.KeyRef, uri string) error {
	return u.cat.Set(id, kek, uri)
}

func (u sharedURIs) Keep(id vault.ID, kek vault.KeyRef) error {
	if err := u.cat.Keep(id, kek); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(u.file.Dir, id.String()+".json")); err != nil {
		return nil // no file left by an older release: nothing to forget there
	}
	return u.file.Keep(id, kek)
}

// vaultStore is where vault name's local store lives under the data
// directory.
func vaultStore(dir, name string) string { return filepath.Join(dir, "vaults", name, "store") }

// openStore opens vault name's store: its own (vaultstore.go), else
// Options.OpenStore's, else the local one under the data directory. With
// mustExist a local store that is missing is an error rather than
// created.
func (s *Server) openStore(ctx context.Context, name string, mustExist bool) (vault.Store, error) {
	raw, err := s.vaultStoreURL(ctx, name)
	if err != nil {
		return nil, err
	}
	if raw != "" {
		st, err := openStoreURL(ctx, raw)
		if err != nil {
			return nil, fmt.Errorf("vault %q: open its store: %w", name, err)
		}
		return st, nil
	}
	if s.opt.OpenStore == nil {
		dir := vaultStore(s.opt.DataDir, name)
		if mustExist {
			if _, err := os.Stat(dir); err != nil {
				return nil, fmt.Errorf("read its store: %w", err)
			}
		}
		return local.Open(dir)
	}
	// The directory marks the vault as this server's (the daily policy run
	// and key retirement list them); its store lives elsewhere.
	if err := os.MkdirAll(VaultDir(s.opt.DataDir, name), 0o700); err != nil {
		return nil, fmt.Errorf("vault %q: %w", name, err)
	}
	st, err := s.opt.OpenStore(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("vault %q: %w", name, err)
	}
	return st, nil
}

// VaultDir is where vault name's store lives under the data directory.
func VaultDir(dataDir, name string) string { return filepath.Join(dataDir, "vaults", name) }

// InitialTokenFile is where the first start writes the one-time owner
// token (mode 0600); it is never logged.
func InitialTokenFile(dir string) string { return filepath.Join(dir, "initial-owner-token") }

// Open opens (creating on first use) the server's state in opt.DataDir.
// On first use it also issues an owner token and writes it to
// InitialTokenFile; firstToken reports whether it did.
func Open(ctx context.Context, opt Options) (s *Server, firstToken bool, err error) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.RetentionAt == "" {
		opt.RetentionAt = DefaultRetentionAt
	}
	retentionAt, err := ParseTimeOfDay(opt.RetentionAt)
	if err != nil {
		return nil, false, fmt.Errorf("daily policy run: %w", err)
	}
	if err := os.MkdirAll(opt.DataDir, 0o700); err != nil {
		return nil, false, fmt.Errorf("data directory: %w", err)
	}
	if err := checkPrivate(opt.DataDir); err != nil {
		return nil, false, err
	}
	cat, err := openCatalog(ctx, opt.DataDir, opt.Catalog)
	if err != nil {
		return nil, false, err
	}
	ks, uris, storeSeal, err := openPlatformKey(ctx, opt, cat)
	if err != nil {
		cat.Close()
		return nil, false, err
	}
	s = &Server{opt: opt, log: opt.Logger, cat: cat, keys: ks, uris: uris, storeSeal: storeSeal, vaults: map[string]*openVault{}, metrics: newMetrics(), retentionAt: retentionAt,
		anon:     limiter{limit: anonymousLimit},
		plimiter: limiter{limit: principalLimit, window: principalWindow, base: principalBlock, max: principalMaxBlock},
		pwSlots:  make(chan struct{}, passwordSlots()),
		decodes:  newByteBudget(decodeBudget)}
	if err := s.openAudit(ctx); err != nil {
		cat.Close()
		return nil, false, err
	}
	s.auth = &authn.Authenticator{Catalog: cat, Now: opt.Now}
	if len(ks.Versions()) > 1 {
		s.markRetire() // a key file rotated before versions were retired
	}
	first, err := s.ensureOwnerToken(ctx)
	if err != nil {
		cat.Close()
		return nil, false, err
	}
	return s, first, nil
}

// ensureOwnerToken issues the first owner token when the catalog has none.
func (s *Server) ensureOwnerToken(ctx context.Context) (bool, error) {
	toks, err := s.cat.Tokens(ctx)
	if err != nil {
		return false, err
	}
	if len(toks) > 0 {
		return false, nil
	}
	secret, hash, id, err := authn.Generate(rand.Reader)
	if err != nil {
		return false, err
	}
	path := InitialTokenFile(s.opt.DataDir)
	// The file first: a crash after it leaves a token that does not work
	// yet, and the next start issues a new one over it.
	if err := fsutil.WriteFileSync(path, []byte(string(secret)+"\n"), 0o600); err != nil {
		return false, fmt.Errorf("write initial owner token: %w", err)
	}
	rec := vault.TokenRecord{ID: id, Name: "initial-owner", Role: string(authn.RoleOwner), Hash: hash, Created: s.opt.Now().UTC()}
	if err := s.cat.AddToken(ctx, rec); err != nil {
		return false, err
	}
	return true, nil
}

// Close flushes and closes every open vault, then the catalog.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first error
	for name, ov := range s.vaults {
		if err := ov.eng.Flush(context.Background()); err != nil && first == nil {
			first = fmt.Errorf("vault %s: %w", name, err)
		}
		ov.close()
		delete(s.vaults, name)
	}
	if err := s.cat.Close(); err != nil && first == nil {
		first = err
	}
	return first
}

var vaultName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// vaultErr names vault name in err once: the catalog's own errors name it
// already (`vault "nope": not found`), and saying it twice reads as two
// failures.
func vaultErr(name string, err error) error {
	if strings.HasPrefix(err.Error(), fmt.Sprintf("vault %q", name)) {
		return err
	}
	return fmt.Errorf("vault %q: %w", name, err)
}

// vault returns the open engine of vault name, opening it on first use.
func (s *Server) vault(ctx context.Context, name string) (*engine.Vault, error) {
	if !vaultName.MatchString(name) {
		return nil, fmt.Errorf("vault %q: %w", name, vault.ErrNotFound)
	}
	s.mu.Lock()
	open, ok := s.vaults[name]
	s.mu.Unlock()
	if ok && s.opt.Catalog != "" {
		// SECURITY: on a shared catalog another server may have deleted
		// the vault since this one opened it (or a catalog writer given
		// the name to another vault ID): an engine kept open would go on
		// taking uploads into the deleted vault's emptied store under its
		// keys. The catalog's record decides at every request; the
		// engine is forgotten (not closed: requests in flight may still
		// use its keys) and the name opened afresh, or refused.
		rec, err := s.cat.Vault(ctx, name)
		if err != nil && !errors.Is(err, vault.ErrNotFound) {
			return nil, vaultErr(name, err)
		}
		if err != nil || rec.ID != open.eng.Record().ID {
			s.mu.Lock()
			if s.vaults[name] == open {
				delete(s.vaults, name)
			}
			s.mu.Unlock()
			s.log.Warn("vault closed: the catalog no longer lists it under its name", "vault", name, "id", open.eng.Record().ID)
			ok = false
		}
	}
	if ok {
		if err := s.catchUpKeys(ctx, open); err != nil {
			return nil, err
		}
		return open.eng, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ov, ok := s.vaults[name]; ok {
		return ov.eng, nil
	}
	rec, err := s.cat.Vault(ctx, name)
	if err != nil {
		return nil, vaultErr(name, err)
	}
	st, err := s.openStore(ctx, name, false)
	if err != nil {
		return nil, err
	}
	// The newest keyring names the key encryption key: the platform key,
	// or a customer key whose URI the server keeps.
	p, err := s.providerFor(ctx, st)
	var eng *engine.Vault
	if err == nil {
		eng, err = engine.Open(ctx, s.engineOptions(ctx, name, st, p))
	}
	if err != nil {
		st.Close()
		s.keyOutcome(ctx, rec.ID, "", err)
		return nil, err
	}
	s.keyOutcome(ctx, rec.ID, eng.KeyInfo().KEK.String(), nil)
	// A vault wrapped by an older platform key version (rotated while it
	// was closed) is rewrapped under the current one.
	if err := s.rewrapPlatform(ctx, eng); err != nil {
		s.log.Warn("vault stays wrapped by the older platform key", "vault", name, "err", err)
	}
	ov := &openVault{eng: eng, store: st}
	s.armObjectLock(ctx, ov)
	s.vaults[name] = ov
	return eng, nil
}

// catchUpKeys makes an open vault use the keys another server sharing
// the catalog changed (a DEK rotation, a switch of key, its rewrap under
// a rotated platform key): the catalog's keyring anchor says when there
// is a newer generation, and the newest keyring which key opens it (the
// platform key's versions, which the other server rotated, are read again
// from the catalog, or the shared key file, for a version this server has
// not seen). Servers with their own catalog make
// every key change themselves and skip the check.
func (s *Server) catchUpKeys(ctx context.Context, ov *openVault) error {
	if s.opt.Catalog == "" {
		return nil
	}
	before := ov.eng.KeyInfo()
	changed, err := ov.eng.RefreshKeys(ctx, func(ctx context.Context) (vault.KeyProvider, error) { return s.providerFor(ctx, ov.store) })
	if err != nil {
		s.keyOutcome(ctx, ov.eng.Record().ID, "", err)
		return err
	}
	if changed {
		after := ov.eng.KeyInfo()
		s.log.Info("vault keys changed by another server", "vault", ov.eng.Record().Name,
			"generation", after.KeyringGen, "from", before.KEK.String(), "to", after.KEK.String(), "dek", after.DEKVersion)
		if after.KEK != before.KEK {
			// SECURITY: the server that switched keys may have died before it
			// deleted the generations under the previous key; this one
			// finishes the job (engine.Open does the same on every open).
			if n, err := ov.eng.RemoveStaleKeyrings(ctx); err != nil {
				s.log.Warn("older keyring generations under another key could not be removed yet; that key may still open them", "vault", ov.eng.Record().Name, "err", err)
			} else if n > 0 {
				s.log.Info("older keyring generations under another key removed", "vault", ov.eng.Record().Name, "generations", n)
			}
		}
	}
	return nil
}

// dropVault forgets an engine whose uploads failed, so the next request
// opens it afresh (an engine keeps its first storage error). The old
// engine is not closed: requests in flight may still be using it, and
// closing wipes its keys under them; it goes when they are done with it.
func (s *Server) dropVault(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.vaults, name)
	s.log.Warn("vault reopens on its next request after a storage error", "vault", name)
}

// Engine returns the engine of vault name, opening it on first use.
func (s *Server) Engine(ctx context.Context, name string) (*engine.Vault, error) {
	return s.vault(ctx, name)
}

// CreateVault creates vault name with the default chunking.
func (s *Server) CreateVault(ctx context.Context, name string) (*engine.Vault, error) {
	return s.CreateVaultWith(ctx, name, engine.DefaultChunker())
}

// CreateVaultWith creates vault name with the given chunking.
func (s *Server) CreateVaultWith(ctx context.Context, name string, chunking vault.ChunkerParams) (*engine.Vault, error) {
	return s.CreateVaultIn(ctx, name, chunking, "")
}

// CreateVaultIn creates vault name with the given chunking in the store
// storeURL names (s3://BUCKET/PREFIX…), or in the server's default store
// when storeURL is "". The URL is recorded, so that the server reopens
// that store on every later start.
func (s *Server) CreateVaultIn(ctx context.Context, name string, chunking vault.ChunkerParams, storeURL string) (*engine.Vault, error) {
	if !vaultName.MatchString(name) {
		return nil, fmt.Errorf("%w: vault name %q: use 1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit", api.ErrBadRequest, name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.cat.Vault(ctx, name); err == nil {
		return nil, fmt.Errorf("vault %q: %w", name, vault.ErrExists)
	}
	if storeURL != "" {
		if err := checkStoreURL(storeURL); err != nil {
			return nil, err
		}
		if err := s.recordStoreURL(ctx, name, storeURL); err != nil {
			return nil, err
		}
	} else if err := s.recordStoreURL(ctx, name, ""); err != nil {
		return nil, err // left by a creation that failed
	}
	st, err := s.openStore(ctx, name, false)
	if err != nil {
		return nil, err
	}
	eng, err := engine.Create(ctx, s.engineOptions(ctx, name, st, s.keys), chunking)
	if err != nil {
		st.Close()
		return nil, err
	}
	ov := &openVault{eng: eng, store: st}
	s.armObjectLock(ctx, ov)
	s.vaults[name] = ov
	return eng, nil
}

// writeJSON writes v with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// readJSON decodes a size-limited JSON body into v.
func readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, api.MaxJSONBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("%w: body over %d bytes", api.ErrTooLarge, api.MaxJSONBody)
		}
		return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	return nil
}

// errDrain is returned by a handler that has already answered.
var errAnswered = errors.New("answered")

func readAllLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: body over %d bytes", api.ErrTooLarge, limit)
	}
	return b, nil
}

// IssueApproverToken issues a security-approver token straight into the
// catalog under dataDir, as only someone on the server machine can: the
// API never issues this role, so an owner cannot approve their own
// requests. The secret is returned once and stored only as a hash.
func IssueApproverToken(ctx context.Context, dataDir, name string, expires, now time.Time) (secret, id string, err error) {
	if err := checkTokenName(name); err != nil {
		return "", "", err
	}
	cat, err := openCatalogOnly(dataDir)
	if err != nil {
		return "", "", err
	}
	defer cat.Close()
	sec, hash, id, err := authn.Generate(rand.Reader)
	if err != nil {
		return "", "", err
	}
	rec := vault.TokenRecord{ID: id, Name: name, Role: string(authn.RoleSecurityApprover), Hash: hash, Created: now.UTC(), CreatedBy: createdByMachine}
	if !expires.IsZero() {
		rec.Expires = expires.UTC()
	}
	if err := cat.AddToken(ctx, rec); err != nil {
		return "", "", err
	}
	return string(sec), id, nil
}

// openCatalogOnly opens the catalog of an existing server data directory,
// for the commands run on the server machine: the PostgreSQL database
// CatalogEnv names, when set, else the data directory's SQLite file.
func openCatalogOnly(dataDir string) (Catalog, error) {
	if u := os.Getenv(CatalogEnv); u != "" {
		return openCatalog(context.Background(), dataDir, u)
	}
	if _, err := os.Stat(catalogFile(dataDir)); err != nil {
		return nil, fmt.Errorf("no vault server data in %s: %w", dataDir, err)
	}
	return sqlite.Open(catalogFile(dataDir))
}
