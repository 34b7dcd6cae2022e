package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/vault"
)

// TestNoSelfApproval: a request's requester can never decide it, even
// holding a token that may decide requests; another principal can.
func TestNoSelfApproval(t *testing.T) {
	ctx := context.Background()
	s, _, err := Open(ctx, Options{DataDir: t.TempDir() + "/data"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	eng, err := s.CreateVault(ctx, "prod")
	if err != nil {
		t.Fatal(err)
	}
	// Both hold the roles to ask and to decide (approver tokens are made
	// on the server machine: "" origin is the initial owner's, which the
	// test borrows for them).
	mallory := vault.TokenRecord{ID: "00000000000000aa", Name: "mallory", Role: string(authn.RoleOwner), Created: time.Now()}
	alice := vault.TokenRecord{ID: "00000000000000bb", Name: "alice", Role: string(authn.RoleSecurityApprover), Created: time.Now()}
	for i, tok := range []*vault.TokenRecord{&mallory, &alice} {
		tok.Hash[0] = byte(i + 1)
		if err := s.cat.AddToken(ctx, *tok); err != nil {
			t.Fatal(err)
		}
	}
	q := func(tok vault.TokenRecord, id string) *request {
		r := httptest.NewRequest("POST", "/v1/requests/"+id+"/approve", nil)
		r.SetPathValue("id", id)
		acc, who, people, err := s.access(ctx, tok)
		if err != nil {
			t.Fatal(err)
		}
		return &request{w: httptest.NewRecorder(), r: r, ctx: ctx, tok: tok, acc: acc, who: who, people: people,
			perm: authn.PermVaultSettings, name: "prod", vault: eng, log: slog.New(slog.DiscardHandler)}
	}
	days := 30
	req, err := s.newRequest(q(mallory, ""), "vault-set", "test", requestParams{Vault: "prod", Change: &api.SettingsChange{SoftDeleteDays: &days}})
	if err != nil {
		t.Fatal(err)
	}
	for _, state := range []vault.RequestState{vault.RequestApproved, vault.RequestRejected} {
		if err := s.decide(q(mallory, req.ID), state); !errors.Is(err, api.ErrForbidden) {
			t.Errorf("the requester decided (%s) their own request: %v", state, err)
		}
	}
	if r, _ := s.cat.Request(ctx, req.ID); r.State != vault.RequestPending {
		t.Fatalf("after the refused self-decisions the request is %s", r.State)
	}
	if err := s.decide(q(alice, req.ID), vault.RequestApproved); err != nil {
		t.Fatal(err)
	}
	if st, _ := eng.Settings(ctx); st.SoftDeleteDays != 30 {
		t.Errorf("approved change not made: %+v", st)
	}
}

// TestLimiterAuditsFirstRefusalOnly: a blocked address is refused until
// its block ends, and only the first refusal of a block is reported.
func TestLimiterAuditsFirstRefusalOnly(t *testing.T) {
	var l limiter
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range failedLimit - 1 {
		if l.fail("192.0.2.1", now) {
			t.Fatalf("blocked after %d failures", i+1)
		}
	}
	if !l.fail("192.0.2.1", now) {
		t.Fatal("not blocked after the limit")
	}
	if w := l.blocked("192.0.2.1", now); w != baseBlock {
		t.Errorf("blocked for %v, want %v", w, baseBlock)
	}
	if l.blocked("192.0.2.2", now) != 0 {
		t.Error("another address is blocked too")
	}
	if !l.firstRefusal("192.0.2.1") || l.firstRefusal("192.0.2.1") {
		t.Error("want exactly the first refusal of a block reported")
	}
	if l.blocked("192.0.2.1", now.Add(baseBlock)) != 0 {
		t.Error("still blocked after the block ended")
	}
	// A further failure blocks for twice as long, and is reported again.
	l.fail("192.0.2.1", now.Add(baseBlock))
	if w := l.blocked("192.0.2.1", now.Add(baseBlock)); w != 2*baseBlock {
		t.Errorf("second block %v, want %v", w, 2*baseBlock)
	}
	if !l.firstRefusal("192.0.2.1") {
		t.Error("the first refusal of the second block is not reported")
	}
}

// TestAnonymousLimit: requests without a token are allowed more before a
// block than refused tokens.
func TestAnonymousLimit(t *testing.T) {
	l := limiter{limit: anonymousLimit}
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range anonymousLimit - 1 {
		if l.fail("192.0.2.9", now) {
			t.Fatalf("anonymous requests blocked after %d", i+1)
		}
	}
	if !l.fail("192.0.2.9", now) || l.blocked("192.0.2.9", now) == 0 {
		t.Error("not blocked after the anonymous limit")
	}
}
