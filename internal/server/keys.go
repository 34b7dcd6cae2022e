package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/keys"
	"github.com/coffer-backup/coffer/internal/keys/cloudkms"
	"github.com/coffer-backup/coffer/internal/keys/pkcs11"
	"github.com/coffer-backup/coffer/internal/keys/platform"
	"github.com/coffer-backup/coffer/internal/keys/rsafile"
	"github.com/coffer-backup/coffer/internal/protect"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Defaults of the key options.
const (
	// DefaultKeyTTL is how long a vault's unwrapped keys stay in memory
	// before the server unwraps them again (docs/keys.md).
	DefaultKeyTTL = 15 * time.Minute
	// DefaultKEKRotation is how old the platform key may get before the
	// server rotates it.
	DefaultKEKRotation = 90 * 24 * time.Hour
)

// serverPrincipal names the server itself in key events it causes (a
// platform key rotation, a key found unreachable on a refresh).
const serverPrincipal = "server"

func (s *Server) keyTTL() time.Duration {
	switch {
	case s.opt.KeyTTL < 0:
		return 0
	case s.opt.KeyTTL == 0:
		return DefaultKeyTTL
	}
	return s.opt.KeyTTL
}

func (s *Server) kekRotation() time.Duration {
	switch {
	case s.opt.KEKRotation < 0:
		return 0
	case s.opt.KEKRotation == 0:
		return DefaultKEKRotation
	}
	return s.opt.KEKRotation
}

// keyConfig is where the server keeps the URIs of customer-managed keys:
// the shared catalog, sealed, when servers share it, else
// DATA/keys/cmk/VAULT-ID.json, mode 0600.
func (s *Server) keyConfig() keys.URIs {
	if s.uris != nil {
		return s.uris
	}
	return keys.Config{Dir: filepath.Join(s.opt.DataDir, "keys", "cmk")}
}

// providerFor picks the key provider that opens the vault in st: the
// platform key, or the customer key its newest keyring names, reached
// through the URI recorded for it.
func (s *Server) providerFor(ctx context.Context, st vault.Store) (vault.KeyProvider, error) {
	// The generation the catalog's anchor accepts names the key, not the
	// store's highest object (one a store writer may have planted).
	cfg, ki, err := engine.InspectWith(ctx, st, s.cat)
	if err != nil {
		return nil, err
	}
	if ki.KEK.Provider == platform.Provider {
		return s.keys, nil
	}
	id, err := vault.ParseID(cfg.ID)
	if err != nil {
		return nil, err
	}
	uri, err := s.keyConfig().URI(id, ki.KEK)
	if err != nil {
		return nil, err
	}
	return keys.Open(uri)
}

// engineOptions are the options of vault name's engine.
func (s *Server) engineOptions(ctx context.Context, name string, st vault.Store, p vault.KeyProvider) engine.Options {
	opt := engine.Options{Store: st, Catalog: s.cat, Keys: p, Name: name, Now: s.opt.Now, Logger: s.log, Uploads: 2, KeyTTL: s.keyTTL()}
	opt.OnKeyRefresh = func(err error) {
		// The refresh happens inside some request; its outcome belongs to
		// the vault, whoever's request it was.
		if rec, rerr := s.cat.Vault(context.WithoutCancel(ctx), name); rerr == nil {
			s.keyOutcome(context.Background(), rec.ID, "", err)
		}
	}
	return opt
}

// keyOutcome records that a vault's key could not be reached (err of the
// key kind), once per outage, or that it is reachable again after one.
func (s *Server) keyOutcome(ctx context.Context, id vault.ID, kek string, err error) {
	last, lerr := s.cat.LastKeyEvent(ctx, id)
	if lerr != nil && !errors.Is(lerr, vault.ErrNotFound) {
		s.log.Warn("could not read the last key event", "err", lerr)
		return
	}
	outage := lerr == nil && last.Event == vault.KeyEventKeyUnavailable
	switch {
	case err == nil && outage:
		s.keyEvent(ctx, id, serverPrincipal, vault.KeyEventKeyRecovered, kek, "the key encryption key is reachable again", true)
	case err != nil && errors.Is(err, engine.ErrKeyringRefused):
		s.keyEvent(ctx, id, serverPrincipal, vault.KeyEventKeyringRefused, kek, err.Error(), false)
	case err != nil && !outage && (errors.Is(err, vault.ErrKeyUnavailable) || errors.Is(err, vault.ErrWrongKey)):
		s.keyEvent(ctx, id, serverPrincipal, vault.KeyEventKeyUnavailable, kek, err.Error(), false)
	}
}

// keyEvent records a key event; a failure to record it is logged, not
// returned: the key operation it describes has happened.
func (s *Server) keyEvent(ctx context.Context, id vault.ID, principal, event, kek, detail string, ok bool) {
	if principal == serverPrincipal { // a request's own audit entry covers the others
		s.auditServer(ctx, id.String(), "key."+event, kek+": "+detail, ok)
	}
	ev := vault.KeyEvent{Vault: id, Time: s.opt.Now().UTC(), Principal: principal, Event: event, KEK: kek, Detail: detail, OK: ok}
	if err := s.cat.AddKeyEvent(ctx, ev); err != nil {
		s.log.Error("could not record a key event", "event", event, "err", err)
	}
}

// principal names who makes the request: a principal ("user:alice"), or
// a token that carries its own role ("token:ID (name)").
func (q *request) principal() string {
	if q.who != "" {
		return q.who
	}
	if q.tok.Name != "" {
		return "token:" + q.tok.ID + " (" + q.tok.Name + ")"
	}
	return "token:" + q.tok.ID
}

// keyErr reports whether err says the vault's key cannot be used.
func keyErr(err error) bool {
	return errors.Is(err, vault.ErrKeyUnavailable) || errors.Is(err, vault.ErrWrongKey)
}

// rewrapPlatform rewraps a vault wrapped by an older version of the
// platform key under the current one (after a rotation).
func (s *Server) rewrapPlatform(ctx context.Context, eng *engine.Vault) error {
	kek := eng.KeyInfo().KEK
	if kek.Provider != platform.Provider || kek == s.keys.Current() {
		return nil
	}
	err := eng.Rewrap(ctx, s.keys)
	if errors.Is(err, engine.ErrKeyChanged) {
		// Another server changed the keys at the same moment, or was
		// killed after it stored its new generation and before it
		// anchored it: unwrapping again takes that generation on (and
		// anchors it), and the rewrap is tried once more if still due.
		if err = eng.EnsureKeys(ctx); err == nil {
			if kek = eng.KeyInfo().KEK; kek.Provider != platform.Provider || kek == s.keys.Current() {
				return nil
			}
			err = eng.Rewrap(ctx, s.keys)
		}
	}
	if err != nil {
		s.keyEvent(ctx, eng.Record().ID, serverPrincipal, vault.KeyEventKEKRotate, kek.String(), "rewrap under the rotated platform key failed: "+err.Error(), false)
		return fmt.Errorf("rewrap under the rotated platform key: %w", err)
	}
	s.keyEvent(ctx, eng.Record().ID, serverPrincipal, vault.KeyEventKEKRotate, s.keys.Current().String(), "vault keys rewrapped from "+kek.String(), true)
	s.log.Info("vault keys rewrapped under the rotated platform key", "vault", eng.Record().Name, "from", kek.String(), "to", s.keys.Current().String())
	return nil
}

// Maintain does the server's periodic key work: it rotates the platform
// key once it is older than the rotation period and rewraps the open
// vaults it wraps, it drops the keys of vaults idle for longer than the
// key time to live, after storing their half-filled packs, and after a
// rotation (or a switch to a customer key) it rewraps every other vault
// too and deletes the platform key versions no vault needs
// (RetirePlatformKeys). Serve runs it every minute (or
// more often with a short key TTL); tests call it with a moved clock.
func (s *Server) Maintain(ctx context.Context) error {
	var errs []error
	// Jobs that change what every replica sharing the catalog sees run
	// on one of them at a time (runJob).
	if err := s.runJob(ctx, "platform-key-rotation", func() error {
		if period := s.kekRotation(); period > 0 {
			if age := s.opt.Now().Sub(s.keys.Created()); age >= period {
				before := s.keys.Current()
				ref, err := s.keys.Rotate(s.opt.Now())
				if err != nil {
					return fmt.Errorf("rotate the platform key: %w", err)
				} else if ref != before {
					s.log.Info("platform key rotated", "from", before.String(), "to", ref.String(), "age", age.Round(time.Hour).String())
					s.markRetire()
				}
			}
		}
		return nil
	}); err != nil {
		errs = append(errs, err)
	}
	s.reapWriters(s.opt.Now())
	s.mu.Lock()
	open := make([]*openVault, 0, len(s.vaults))
	for _, ov := range s.vaults {
		open = append(open, ov)
	}
	s.mu.Unlock()
	if err := s.runJob(ctx, "retention", func() error { return s.applyPolicies(ctx) }); err != nil {
		errs = append(errs, err)
	}
	if err := s.keepObjectLocks(ctx); err != nil {
		errs = append(errs, err)
	}
	for _, ov := range open {
		// A key change through another server first: rewrapping keys that
		// one replaced would only be refused.
		if err := s.catchUpKeys(ctx, ov); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := s.rewrapPlatform(ctx, ov.eng); err != nil {
			errs = append(errs, err)
		}
		if ov.eng.KeysExpired() {
			// Store the half-filled packs first: a pack being filled holds
			// its DEK until it is stored.
			if err := ov.eng.Flush(ctx); err != nil {
				errs = append(errs, fmt.Errorf("vault %s: %w", ov.eng.Record().Name, err))
				continue
			}
			if ov.eng.ExpireKeys() {
				s.log.Debug("keys dropped after their time to live", "vault", ov.eng.Record().Name)
			}
		}
	}
	// After a rotation, the versions no vault needs any more are deleted
	// from the key file (every vault rewrapped first): a saved copy of a
	// vault's store and catalog wrapped under one then opens nothing.
	if err := s.runJob(ctx, "platform-key-retirement", func() error { return s.maybeRetire(ctx) }); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// maintainEvery is how often Serve runs Maintain.
func (s *Server) maintainEvery() time.Duration {
	d := time.Minute
	if ttl := s.keyTTL(); ttl > 0 && ttl/4 < d {
		d = max(ttl/4, time.Second)
	}
	return d
}

// checkKeyURI refuses a customer-key URI that would make the server load
// code or read files its operator has not allowed: whoever may manage
// keys must not be able to point the server at an arbitrary PKCS#11
// module (a shared library the server would load) or at any file it can
// read.
func (s *Server) checkKeyURI(uri string) error {
	scheme, _, _ := strings.Cut(uri, ":")
	switch scheme {
	case "pkcs11":
		c, err := pkcs11.ParseURI(uri)
		if err != nil {
			return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
		}
		if c.ModulePath == "" {
			return fmt.Errorf("%w: key URI %s: name the PKCS#11 module with module-path= (one the server allows with --pkcs11-module)", api.ErrBadRequest, keys.Redact(uri))
		}
		if !slices.Contains(s.opt.PKCS11Modules, filepath.Clean(c.ModulePath)) {
			return fmt.Errorf("%w: key URI %s: this server does not load the PKCS#11 module %s: its operator allows a module with `coffer server --pkcs11-module PATH`", api.ErrForbidden, keys.Redact(uri), c.ModulePath)
		}
		if c.PINSource != "" && !s.inKeyDir(c.PINSource) {
			return fmt.Errorf("%w: key URI %s: pin-source %s is outside the directories this server reads key material from (`coffer server --key-dir DIR`)", api.ErrForbidden, keys.Redact(uri), c.PINSource)
		}
	case cloudkms.AWSKMS, cloudkms.AzureKeyVault, cloudkms.GCPKMS, cloudkms.HashiVault:
		ref, err := cloudkms.ParseURI(uri)
		if err != nil {
			return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
		}
		// endpoint= would send the server's KMS requests (and the secret
		// they wrap) to a host of the requester's choosing; profile= and
		// role= would pick which of the server's credentials to use.
		// The operator sets those in the server's environment instead.
		for _, p := range []string{"endpoint", "profile", "role", "awssdk"} {
			if ref.Params.Has(p) {
				return fmt.Errorf("%w: key URI %s: this server does not take %s= from a key URI: its operator configures the KMS client in the server's environment (docs/operations.md)", api.ErrForbidden, keys.Redact(uri), p)
			}
		}
	case "rsa-file":
		path, err := rsafile.ParseURI(uri)
		if err != nil {
			return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
		}
		if !s.inKeyDir(path) {
			return fmt.Errorf("%w: key URI %s: the file is outside the directories this server reads key material from: its operator allows one with `coffer server --key-dir DIR`", api.ErrForbidden, keys.Redact(uri))
		}
	}
	return nil
}

// inKeyDir reports whether path, with symbolic links resolved, lies
// inside one of the directories the operator allowed.
func (s *Server) inKeyDir(path string) bool {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		real = filepath.Clean(path) // a missing file: the provider will say so
	}
	for _, d := range s.opt.KeyDirs {
		rd, err := filepath.EvalSymlinks(d)
		if err != nil {
			continue
		}
		if rel, err := filepath.Rel(rd, real); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel) {
			return true
		}
	}
	return false
}

func keyStatusOf(ki engine.KeyInfo) api.KeyStatus {
	return api.KeyStatus{KEK: ki.KEK.String(), KeySource: ki.KeySource, WrapAlg: ki.WrapAlg,
		DEKVersion: ki.DEKVersion, DEKCount: ki.DEKCount, KeyringGen: ki.KeyringGen}
}

// inspect describes vault name's keys from its store alone, for when they
// cannot be unwrapped.
func (s *Server) inspect(ctx context.Context, name string) (vault.VaultRecord, engine.KeyInfo, error) {
	rec, err := s.cat.Vault(ctx, name)
	if err != nil {
		return rec, engine.KeyInfo{}, vaultErr(name, err)
	}
	st, err := s.openStore(ctx, name, false)
	if err != nil {
		return rec, engine.KeyInfo{}, err
	}
	defer st.Close()
	_, ki, err := engine.InspectWith(ctx, st, s.cat)
	return rec, ki, err
}

// keyStatus probes the vault's key encryption key. It answers 200 with
// key_reachable false when the key cannot be used.
func (s *Server) keyStatus(q *request) error {
	eng, err := s.vault(q.ctx, q.name)
	if err != nil {
		if !keyErr(err) {
			return err
		}
		_, ki, ierr := s.inspect(q.ctx, q.name)
		if ierr != nil {
			return errors.Join(err, ierr)
		}
		st := keyStatusOf(ki)
		st.Error = err.Error()
		writeJSON(q.w, http.StatusOK, st)
		return nil
	}
	st := keyStatusOf(eng.KeyInfo())
	if perr := eng.ProbeKey(q.ctx); perr != nil {
		st.Error = perr.Error()
		s.keyOutcome(q.ctx, eng.Record().ID, st.KEK, perr)
	} else {
		st.Reachable = true
	}
	writeJSON(q.w, http.StatusOK, st)
	return nil
}

func (s *Server) keyRotate(q *request) error {
	ki := q.vault.KeyInfo()
	ver, err := q.vault.RotateDEK(q.ctx)
	if err != nil {
		s.keyEvent(q.ctx, q.vault.Record().ID, q.principal(), vault.KeyEventDEKRotate, ki.KEK.String(), "DEK rotation failed: "+err.Error(), false)
		return err
	}
	after := q.vault.KeyInfo()
	s.keyEvent(q.ctx, q.vault.Record().ID, q.principal(), vault.KeyEventDEKRotate, after.KEK.String(), fmt.Sprintf("DEK v%d in use", ver), true)
	q.log.Info("data key rotated", "vault", q.name, "dek", ver, "token", q.tok.ID)
	writeJSON(q.w, http.StatusOK, api.KeyChange{Before: fmt.Sprintf("DEK v%d", ki.DEKVersion), After: fmt.Sprintf("DEK v%d", ver), Changed: true,
		DEKVersion: after.DEKVersion, DEKCount: after.DEKCount, KeyringGen: after.KeyringGen})
	return nil
}

func (s *Server) keyUseCMK(q *request) error {
	var body api.UseCMK
	if err := readJSON(q.w, q.r, &body); err != nil {
		return err
	}
	q.note("uri", keys.Redact(body.URI))
	if err := s.checkKeyURI(body.URI); err != nil {
		return err
	}
	to, err := keys.Open(body.URI)
	if err != nil {
		if keyErr(err) {
			return err
		}
		return fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	rec, ki, err := s.inspect(q.ctx, q.name)
	if err != nil {
		return err
	}
	cfg := s.keyConfig()
	// The URI first: a crash after the rewrap must find it. And a vault
	// already wrapped by this key whose URI the server lost needs nothing
	// more to open again. Recording it changes nothing else: the vault's
	// keyring, not this file, says which key opens it, so a URI recorded
	// for a switch that waits for approval is inert until then.
	if err := cfg.Set(rec.ID, to.Current(), body.URI); err != nil {
		return err
	}
	if ki.KEK == to.Current() {
		s.dropVault(q.name) // reopen with the recorded URI
		writeJSON(q.w, http.StatusOK, api.KeyChange{Before: ki.KEK.String(), After: ki.KEK.String(),
			DEKVersion: ki.DEKVersion, DEKCount: ki.DEKCount, KeyringGen: ki.KeyringGen})
		return nil
	}
	settings, err := s.verifiedSettings(q.ctx, q.name)
	if err != nil {
		return err
	}
	// SECURITY: on an immutable vault the switch is a request for a
	// security approver: nothing is rewrapped and no keyring generation
	// removed before the approval (carryOut calls useCMK then).
	if c := protect.UseCMK(settings); c.NeedsApproval() {
		kek := to.Current()
		req, err := s.newRequest(q, "use-cmk", fmt.Sprintf("%s (%s → %s, %s)", strings.Join(c.Critical, "; "), ki.KEK, kek, keys.Redact(body.URI)),
			requestParams{Vault: q.name, KEK: &kek})
		if err != nil {
			return err
		}
		writeJSON(q.w, http.StatusAccepted, struct {
			api.KeyChange
			Request *api.Request `json:"request"`
		}{api.KeyChange{Before: ki.KEK.String(), After: ki.KEK.String(), DEKVersion: ki.DEKVersion, DEKCount: ki.DEKCount, KeyringGen: ki.KeyringGen}, &req})
		return nil
	}
	eng, err := s.vault(q.ctx, q.name)
	if err != nil {
		return err
	}
	before := eng.KeyInfo().KEK
	if err := s.useCMK(q.ctx, eng, to, body.URI, q.principal()); err != nil {
		return err
	}
	after := eng.KeyInfo()
	q.log.Info("vault switched to a customer-managed key", "vault", q.name, "from", before.String(), "to", after.KEK.String(), "token", q.tok.ID)
	writeJSON(q.w, http.StatusOK, api.KeyChange{Before: before.String(), After: after.KEK.String(), Changed: true,
		DEKVersion: after.DEKVersion, DEKCount: after.DEKCount, KeyringGen: after.KeyringGen})
	return nil
}

// useCMK rewraps the vault's keys under the customer key to, reached
// through uri (already recorded), and forgets the previous key's URI.
func (s *Server) useCMK(ctx context.Context, eng *engine.Vault, to vault.KeyProvider, uri, principal string) error {
	id := eng.Record().ID
	before := eng.KeyInfo().KEK
	if err := eng.Rewrap(ctx, to); err != nil {
		s.keyEvent(ctx, id, principal, vault.KeyEventUseCMK, to.Current().String(), "switch from "+before.String()+" failed: "+err.Error(), false)
		return err
	}
	s.keyEvent(ctx, id, principal, vault.KeyEventUseCMK, to.Current().String(), "keys rewrapped from "+before.String()+" ("+keys.Redact(uri)+")", true)
	if err := s.keyConfig().Keep(id, to.Current()); err != nil {
		s.log.Warn("could not forget the previous key's URI", "vault", eng.Record().Name, "err", err)
	}
	s.markRetire() // the platform key versions it used may be needed no more
	return nil
}

// approvedCMK carries out an approved use-cmk request: the key is reached
// through the URI recorded when it was requested, and must still be the
// key the approver was shown, from a module or directory the operator
// still allows.
func (s *Server) approvedCMK(ctx context.Context, eng *engine.Vault, kek *vault.KeyRef, who string) (string, error) {
	if kek == nil {
		return "", errors.New("no key recorded in the request")
	}
	before := eng.KeyInfo().KEK
	if before == *kek {
		return "the vault's keys were already wrapped by " + kek.String(), nil
	}
	uri, err := s.keyConfig().URI(eng.Record().ID, *kek)
	if err != nil {
		return "", err
	}
	if err := s.checkKeyURI(uri); err != nil {
		return "", err
	}
	to, err := keys.Open(uri)
	if err != nil {
		return "", err
	}
	if to.Current() != *kek {
		return "", fmt.Errorf("the key's URI now reaches %s, not the approved %s: ask again", to.Current(), kek)
	}
	if err := s.useCMK(ctx, eng, to, uri, who); err != nil {
		return "", err
	}
	return "keys rewrapped from " + before.String() + " to " + eng.KeyInfo().KEK.String(), nil
}

// keyUsePMK asks to switch the vault back to the platform key: taking
// the key out of the customer's control is critical, so it becomes a
// request for a security approver (202), carried out by usePMK.
func (s *Server) keyUsePMK(q *request) error {
	before := q.vault.KeyInfo()
	if before.KEK.Provider == platform.Provider {
		writeJSON(q.w, http.StatusOK, api.KeyChange{Before: before.KEK.String(), After: before.KEK.String(),
			DEKVersion: before.DEKVersion, DEKCount: before.DEKCount, KeyringGen: before.KeyringGen})
		return nil
	}
	c := protect.UsePMK()
	req, err := s.newRequest(q, "use-pmk", strings.Join(c.Critical, "; ")+" ("+before.KEK.String()+")", requestParams{Vault: q.name})
	if err != nil {
		return err
	}
	writeJSON(q.w, http.StatusAccepted, struct {
		api.KeyChange
		Request *api.Request `json:"request"`
	}{api.KeyChange{Before: before.KEK.String(), After: before.KEK.String(), DEKVersion: before.DEKVersion, DEKCount: before.DEKCount, KeyringGen: before.KeyringGen}, &req})
	return nil
}

// usePMK rewraps the vault's keys under the platform key.
func (s *Server) usePMK(ctx context.Context, eng *engine.Vault, principal string) error {
	before := eng.KeyInfo()
	if before.KEK.Provider == platform.Provider {
		return nil
	}
	id := eng.Record().ID
	if err := eng.Rewrap(ctx, s.keys); err != nil {
		s.keyEvent(ctx, id, principal, vault.KeyEventUsePMK, s.keys.Current().String(), "switch from "+before.KEK.String()+" failed: "+err.Error(), false)
		return err
	}
	after := eng.KeyInfo()
	s.keyEvent(ctx, id, principal, vault.KeyEventUsePMK, after.KEK.String(), "keys rewrapped from "+before.KEK.String(), true)
	if err := s.keyConfig().Keep(id, after.KEK); err != nil {
		s.log.Warn("could not forget the customer key's URI", "vault", eng.Record().Name, "err", err)
	}
	s.log.Info("vault switched to the platform key", "vault", eng.Record().Name, "from", before.KEK.String(), "by", principal)
	return nil
}

func (s *Server) keyEvents(q *request) error {
	rec, err := s.cat.Vault(q.ctx, q.name)
	if err != nil {
		return vaultErr(q.name, err)
	}
	evs, err := s.cat.KeyEvents(q.ctx, rec.ID)
	if err != nil {
		return err
	}
	out := make([]api.KeyEvent, len(evs))
	for i, e := range evs {
		out[i] = api.KeyEvent{Time: e.Time, Principal: e.Principal, Event: e.Event, KEK: e.KEK, Detail: e.Detail, OK: e.OK}
	}
	writeJSON(q.w, http.StatusOK, out)
	return nil
}
