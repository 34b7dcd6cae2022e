package server

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-backup/coffer/internal/catalog/postgres/pgtest"
)

// syncBuffer is a log destination the server's goroutines may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestJobLockHeldElsewhereWarns plays a user of the shared database who
// takes a background job's advisory lock and keeps it: the servers skip
// the job each turn, as they do while another server runs it, but once
// it has been held for jobStuckAfter each skip is a warning naming the
// job, not a debug line; a turn that runs the job starts the count again.
func TestJobLockHeldElsewhereWarns(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	var mu sync.Mutex
	now := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	logs := &syncBuffer{}
	s, _, err := Open(ctx, Options{DataDir: dir, Catalog: url, Now: clock, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	attacker, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close(ctx)
	lockKey := `hashtextextended('coffer ' || current_schema() || ' ' || $1::text, 0)`
	hold := func() {
		t.Helper()
		if _, err := attacker.Exec(ctx, `SELECT pg_advisory_lock(`+lockKey+`)`, "job retention"); err != nil {
			t.Fatal(err)
		}
	}
	hold()
	ran := 0
	job := func() error { ran++; return nil }
	warned := func() bool {
		return strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "job=retention")
	}

	for range 5 { // an hour a turn: held, but not yet for long
		if err := s.runJob(ctx, "retention", job); err != nil {
			t.Fatal(err)
		}
		advance(time.Hour)
	}
	if ran != 0 || warned() {
		t.Fatalf("after 5 hours held elsewhere: ran %d times, warned %v\n%s", ran, warned(), logs.String())
	}
	advance(time.Hour)
	if err := s.runJob(ctx, "retention", job); err != nil {
		t.Fatal(err)
	}
	if ran != 0 || !warned() {
		t.Fatalf("after 6 hours held elsewhere: ran %d times, warned %v\n%s", ran, warned(), logs.String())
	}

	// Released: the job runs, and the count starts again.
	if _, err := attacker.Exec(ctx, `SELECT pg_advisory_unlock(`+lockKey+`)`, "job retention"); err != nil {
		t.Fatal(err)
	}
	if err := s.runJob(ctx, "retention", job); err != nil || ran != 1 {
		t.Fatalf("once released: ran %d times, %v", ran, err)
	}
	logs.mu.Lock()
	logs.b.Reset()
	logs.mu.Unlock()
	hold()
	advance(time.Hour)
	if err := s.runJob(ctx, "retention", job); err != nil {
		t.Fatal(err)
	}
	if ran != 1 || warned() {
		t.Fatalf("held again for an hour: ran %d times, warned %v\n%s", ran, warned(), logs.String())
	}
}
