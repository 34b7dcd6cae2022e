package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Timeouts of every connection. Uploads and downloads of a batch take
// seconds; a check can take hours and lifts its own write deadline.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 10 * time.Minute
	writeTimeout      = 10 * time.Minute
	idleTimeout       = 2 * time.Minute
	// DefaultBodyTimeout bounds how long a request to a public route (a
	// login) may take to send its body.
	DefaultBodyTimeout = 10 * time.Second
	// refusedBodyGrace is how long the rest of a refused request's body
	// may take to arrive before its connection is closed.
	refusedBodyGrace = time.Second
	// MaxConnsPerAddr bounds the connections one address (an IPv4
	// address, an IPv6 /64) holds open at once; further ones are closed
	// as soon as they are accepted.
	MaxConnsPerAddr = 256
	// DrainTimeout is how long a stopping server lets requests in flight
	// finish before it closes their connections.
	DrainTimeout = 30 * time.Second
)

// Serve answers HTTPS on ln until ctx is done, then drains: it stops
// accepting, lets requests in flight finish (uploads complete or fail as
// a whole; the store never shows a half-written object), flushes the
// vaults' packs and returns. There is no plaintext mode: cfg must be set.
func (s *Server) Serve(ctx context.Context, ln net.Listener, cfg *tls.Config) error {
	if cfg == nil || len(cfg.Certificates) == 0 && cfg.GetCertificate == nil {
		return errors.New("serve: a TLS certificate is required; coffer has no plaintext mode")
	}
	s.tlsConfig.Store(cfg) // what the posture report's TLS checks read
	hs := &http.Server{
		Handler:           s.Handler(),
		TLSConfig:         cfg,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    64 << 10,
		// Uploads are several MiB a request and several requests share
		// one HTTP/2 connection: the default 1 MiB receive windows would
		// make the agent wait for window updates on a fast network.
		HTTP2: &http.HTTP2Config{
			MaxReceiveBufferPerConnection: 32 << 20,
			MaxReceiveBufferPerStream:     8 << 20,
		},
		ErrorLog:    log.New(slogWriter{s.log}, "", 0),
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(tls.NewListener(&connLimit{Listener: ln, max: MaxConnsPerAddr}, cfg)) }()
	mctx, stopMaintain := context.WithCancel(ctx)
	defer stopMaintain()
	go s.maintainLoop(mctx)
	// Audit checkpoints every minute; the last one when Serve returns.
	actx, stopAudit := context.WithCancel(context.WithoutCancel(ctx))
	auditDone := make(chan struct{})
	go func() { s.runAudit(actx); close(auditDone) }()
	defer func() { stopAudit(); <-auditDone }()
	go s.summaryLoop(actx)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.log.Info("stopping: draining requests in flight", "timeout", DrainTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), DrainTimeout)
	defer cancel()
	err := hs.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		hs.Close()
	}
	<-errc
	// What the drained requests were told is stored must be durable when
	// Serve returns, and a failure to store it must be reported.
	if ferr := s.flushVaults(); ferr != nil && err == nil {
		err = ferr
	}
	// The summaries go in before the audit log's last checkpoint.
	s.FlushAuditSummaries(context.WithoutCancel(ctx))
	return err
}

// maintainLoop runs Maintain until ctx is done.
func (s *Server) maintainLoop(ctx context.Context) {
	t := time.NewTicker(s.maintainEvery())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.Maintain(ctx); err != nil {
				s.log.Error("key maintenance", "err", err)
			}
			if err := s.RecordPostures(ctx); err != nil {
				s.log.Error("daily posture record", "err", err)
			}
		}
	}
}

// flushVaults stores the packs being filled in every open vault and waits
// for their uploads; it returns the first error. The vaults stay open.
func (s *Server) flushVaults() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first error
	for name, ov := range s.vaults {
		if err := ov.eng.Flush(context.Background()); err != nil && first == nil {
			first = fmt.Errorf("flush vault %s: %w", name, err)
		}
	}
	return first
}

// slogWriter sends net/http's own error log (TLS handshake failures,
// plain-HTTP requests) to the structured log at debug level, except a
// handler's panic, which is a server bug: that is logged as an error.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	if bytes.HasPrefix(p, []byte("http: panic serving ")) || bytes.HasPrefix(p, []byte("http2: panic serving ")) {
		w.l.Error("request handler panicked", "msg", string(p))
		return len(p), nil
	}
	w.l.Debug("http", "msg", string(p))
	return len(p), nil
}
