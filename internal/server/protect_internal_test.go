package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/authn"
	"github.com/coffer-backup/coffer/internal/vault"
)

// TestNoSelfApproval: a request's requester can never decide it, even
// holding a token that may decide requests; another principal can.
func TestNoSelfApproval(t *testing.T) {
	ctx := context.Background()
	s, _, err := Open(ctx, Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	eng, err := s.CreateVault(ctx, "prod")
	if err != nil {
		t.Fatal(err)
	}
	mallory := vault.TokenRecord{ID: "00000000000000aa", Name: "mallory", Role: string(authn.RoleSecurityApprover)}
	alice := vault.TokenRecord{ID: "00000000000000bb", Name: "alice", Role: string(authn.RoleSecurityApprover)}
	q := func(tok vault.TokenRecord, id string) *request {
		r := httptest.NewRequest("POST", "/v1/requests/"+id+"/approve", nil)
		r.SetPathValue("id", id)
		return &request{w: httptest.NewRecorder(), r: r, ctx: ctx, tok: tok, name: "prod", vault: eng, log: slog.New(slog.DiscardHandler)}
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
