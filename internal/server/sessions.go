package server

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/engine"
	"github.com/coffer-backup/coffer/internal/vault"
)

// Writer sessions of remote backups. An agent learns which blobs a vault
// holds (the answers to its missing queries) and may reference them in a
// snapshot much later; prune must not delete a pack such an agent may
// still reference. So the first upload request of a backup registers a
// session in the catalog (named by the client's Coffer-Session header),
// every later one keeps it alive, and saving the snapshot ends it.
// A session that went without a request for longer than a prune treats
// as alive is expired: its snapshot is refused (ErrSessionExpired).

var sessionIDRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

type writerSessions struct {
	mu sync.Mutex
	m  map[string]*writer // by catalog session ID
}

type writer struct {
	vault   string
	token   string // the token that opened it
	started time.Time
	touched time.Time
	expired bool
}

// maxSessionsPerToken bounds the backup sessions one token keeps open at
// once (each is a catalog row prune must respect); a session quiet for
// vault.SessionStale no longer counts.
const maxSessionsPerToken = 16

// sessionID is the catalog ID of the request's writer session: the
// client's header, or one per token for a client that sends none.
func sessionID(q *request) string {
	if h := q.r.Header.Get(api.HeaderSession); sessionIDRE.MatchString(h) {
		return "agent-" + h
	}
	return "token-" + q.tok.ID
}

// touchWriter registers or keeps alive the request's writer session.
func (s *Server) touchWriter(q *request) error {
	id := sessionID(q)
	now := s.opt.Now().UTC()
	s.writers.mu.Lock()
	if s.writers.m == nil {
		s.writers.m = map[string]*writer{}
	}
	w, ok := s.writers.m[id]
	if ok && !w.expired && now.Sub(w.touched) > vault.SessionStale-2*vault.SessionTouch {
		// Quiet here; but behind a load balancer the agent's requests
		// may have gone to another server sharing the catalog, which
		// kept the session alive there (and so held prune back).
		s.writers.mu.Unlock()
		touched, err := s.catalogTouched(q, id)
		if err != nil {
			return err
		}
		s.writers.mu.Lock()
		if touched.After(w.touched) {
			w.touched = touched
		}
	}
	if ok {
		if now.Sub(w.touched) > vault.SessionStale-2*vault.SessionTouch || engine.SessionTooOld(w.started, now) {
			w.expired = true
		}
		due := now.Sub(w.touched) >= vault.SessionTouch
		if due {
			w.touched = now
		}
		s.writers.mu.Unlock()
		if due && !w.expired {
			if err := s.cat.TouchSession(q.ctx, id, now); err != nil && !errors.Is(err, vault.ErrNotFound) {
				return fmt.Errorf("keep the backup session alive: %w", err)
			}
		}
		return nil
	}
	open := 0
	for _, o := range s.writers.m {
		if o.token == q.tok.ID && !o.expired && now.Sub(o.touched) <= vault.SessionStale {
			open++
		}
	}
	if open >= maxSessionsPerToken {
		s.writers.mu.Unlock()
		q.w.Header().Set("Retry-After", "60")
		return fmt.Errorf("%w: this token has %d backups in progress; finish one, or wait %v for a stopped one to expire", api.ErrTooManyRequests, open, vault.SessionStale)
	}
	w = &writer{vault: q.name, token: q.tok.ID, started: now, touched: now}
	s.writers.m[id] = w
	s.writers.mu.Unlock()
	err := s.cat.BeginSession(q.ctx, q.vault.Record().ID, vault.Session{ID: id, Kind: "backup", Principal: q.principal(), Started: now, Touched: now})
	if errors.Is(err, vault.ErrExists) {
		// Known to the catalog but not to this process (a restart):
		// alive only if it was touched recently.
		ss, lerr := s.cat.Sessions(q.ctx, q.vault.Record().ID)
		if lerr != nil {
			return lerr
		}
		expired := true
		started := now
		for _, cs := range ss {
			if cs.ID == id && now.Sub(cs.Touched) <= vault.SessionStale-2*vault.SessionTouch && !engine.SessionTooOld(cs.Started, now) {
				expired = false
				started = cs.Started
			}
		}
		s.writers.mu.Lock()
		w.expired, w.started = expired, started
		s.writers.mu.Unlock()
		if !expired {
			return s.cat.TouchSession(q.ctx, id, now)
		}
		return nil
	}
	return err
}

// catalogTouched returns when the catalog last recorded session id of the
// request's vault as touched (zero if it holds no such session).
func (s *Server) catalogTouched(q *request, id string) (time.Time, error) {
	ss, err := s.cat.Sessions(q.ctx, q.vault.Record().ID)
	if err != nil {
		return time.Time{}, fmt.Errorf("read the backup session: %w", err)
	}
	for _, cs := range ss {
		if cs.ID == id {
			return cs.Touched, nil
		}
	}
	return time.Time{}, nil
}

// writerAlive fails when the request's session has expired: its
// snapshot must not be saved.
func (s *Server) writerAlive(q *request) error {
	s.writers.mu.Lock()
	w, ok := s.writers.m[sessionID(q)]
	expired := ok && w.expired
	s.writers.mu.Unlock()
	if expired {
		return fmt.Errorf("%w: %w", vault.ErrConflict, engine.ErrSessionExpired)
	}
	return nil
}

// endWriter removes the request's session (its snapshot is saved).
func (s *Server) endWriter(ctx context.Context, q *request) {
	id := sessionID(q)
	s.writers.mu.Lock()
	delete(s.writers.m, id)
	s.writers.mu.Unlock()
	if err := s.cat.EndSession(ctx, id); err != nil {
		q.log.Warn("could not end the backup session", "err", err)
	}
}

// reapWriters forgets sessions gone quiet for long (agents that died);
// the catalog rows go with prune.
func (s *Server) reapWriters(now time.Time) {
	s.writers.mu.Lock()
	defer s.writers.mu.Unlock()
	for id, w := range s.writers.m {
		if now.Sub(w.touched) > 2*vault.SessionStale {
			delete(s.writers.m, id)
		}
	}
}
