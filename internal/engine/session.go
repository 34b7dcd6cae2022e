package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/coffer-backup/coffer/internal/vault"
)

// session is the writer session of a vault opened with Options.Session.
type session struct {
	rec     vault.Session
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	touched time.Time // the last touch the catalog accepted
	once    sync.Once
}

// ErrSessionExpired reports a writer whose session went without a sign
// of life for longer than vault.SessionStale (a process suspended or cut
// off from its catalog): prune may have deleted packs it relies on, so
// its snapshot is not saved.
var ErrSessionExpired = errors.New("this backup's session went without a sign of life for too long, or ran for longer than vault.SessionMaxAge (prune may have removed data it relies on): run the backup again")

// SessionTooOld reports whether a writer session that started at started
// must no longer save a snapshot at now: prune stops waiting for it at
// vault.SessionMaxAge, and a margin keeps the two from racing.
func SessionTooOld(started, now time.Time) bool {
	return now.Sub(started) > vault.SessionMaxAge-vault.SessionStale
}

func newSessionID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// beginSession registers Options.Session, before the index is loaded.
func (v *Vault) beginSession(ctx context.Context) error {
	if v.opt.Session == nil {
		return nil
	}
	rec := *v.opt.Session
	if rec.ID == "" {
		rec.ID = newSessionID()
	}
	now := v.opt.Now().UTC()
	rec.Started, rec.Touched = now, now
	if err := v.opt.Catalog.BeginSession(ctx, v.rec.ID, rec); err != nil {
		return fmt.Errorf("open vault: begin %s session: %w", rec.Kind, err)
	}
	s := &session{rec: rec, stop: make(chan struct{}), done: make(chan struct{}), touched: now}
	v.sess = s
	go v.touchLoop(s)
	return nil
}

func (v *Vault) touchLoop(s *session) {
	defer close(s.done)
	t := time.NewTicker(vault.SessionTouch)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			now := v.opt.Now().UTC()
			if err := v.opt.Catalog.TouchSession(context.Background(), s.rec.ID, now); err != nil {
				v.log.Warn("could not record that the backup session is alive", "err", err)
				continue
			}
			s.mu.Lock()
			s.touched = now
			s.mu.Unlock()
		}
	}
}

// checkSession fails with ErrSessionExpired when the writer's session
// has gone stale: prune treats it as dead.
func (v *Vault) checkSession() error {
	s := v.sess
	if s == nil {
		return nil
	}
	s.mu.Lock()
	last := s.touched
	s.mu.Unlock()
	// A margin of two touch periods: a touch may be late.
	if v.opt.Now().Sub(last) > vault.SessionStale-2*vault.SessionTouch || SessionTooOld(s.rec.Started, v.opt.Now()) {
		return ErrSessionExpired
	}
	return nil
}

// endSession stops the touches and removes the session.
func (v *Vault) endSession() {
	s := v.sess
	if s == nil {
		return
	}
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		if err := v.opt.Catalog.EndSession(context.Background(), s.rec.ID); err != nil {
			v.log.Warn("could not end the backup session", "err", err)
		}
	})
}
