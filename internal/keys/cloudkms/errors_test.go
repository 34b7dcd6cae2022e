//go:build !nocloudkms

package cloudkms

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/aws/smithy-go"
	vaultapi "github.com/hashicorp/vault/api"
	"gocloud.dev/gcerrors"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coffer-backup/coffer/internal/vault"
)

// The mapping from every gocloud error code, through a real
// *secrets.Keeper (whose driver returns errors with the code), to what
// Wrap and Unwrap report.
func TestGocloudCodes(t *testing.T) {
	type want struct {
		reason reason
		wrap   error // what Wrap fails with when Encrypt fails with the code
		unwrap error // what Unwrap fails with when Decrypt fails with the code
	}
	cases := map[gcerrors.ErrorCode]want{
		gcerrors.PermissionDenied:   {reasonDenied, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable},
		gcerrors.NotFound:           {reasonNotFound, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable},
		gcerrors.FailedPrecondition: {reasonDisabled, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable},
		gcerrors.DeadlineExceeded:   {reasonUnreachable, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable},
		gcerrors.ResourceExhausted:  {reasonUnreachable, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable},
		gcerrors.Internal:           {reasonUnreachable, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable},
		gcerrors.Unimplemented:      {reasonUnusable, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable},
		// The KMS examined the ciphertext and refused it: the record is
		// at fault. (On Encrypt, which only ever gets a fresh key, the
		// key is.)
		gcerrors.InvalidArgument: {reasonBadInput, vault.ErrKeyUnavailable, vault.ErrWrongKey},
		// Unclassified: Unwrap probes the key, which fails here too
		// (every Decrypt fails), so the key is unavailable.
		gcerrors.Unknown:       {reasonUnknown, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable},
		gcerrors.AlreadyExists: {reasonUnknown, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable},
		// The caller gave up: not the key's fault, no key event.
		gcerrors.Canceled: {reasonCanceled, context.Canceled, context.Canceled},
	}
	for c := gcerrors.Unknown; c <= gcerrors.DeadlineExceeded; c++ {
		if _, found := cases[c]; !found && c != gcerrors.OK {
			t.Errorf("gcerrors code %v has no case", c)
		}
	}
	for code, w := range cases {
		t.Run(code.String(), func(t *testing.T) {
			if got := fromCode(code); got != w.reason {
				t.Errorf("fromCode(%v) = %v, want %v", code, got, w.reason)
			}
			k := newLocalKey(t, "coffer-codes")
			p, d := k.provider(t)
			secret, aad := make([]byte, 32), []byte("aad")
			rec := mustWrap(t, p, secret, aad)
			fail := &codedErr{code, fmt.Sprintf("fake failure with code %v", code)}

			d.failEnc.Store(fail)
			_, err := p.Wrap(t.Context(), secret, aad)
			checkMapped(t, "Wrap", err, w.wrap, w.reason, k.ref)
			d.failEnc.Store(nil)

			d.failDec.Store(fail)
			got, err := p.Unwrap(t.Context(), rec, aad)
			if got != nil {
				t.Error("a failed Unwrap returned data")
			}
			checkMapped(t, "Unwrap", err, w.unwrap, w.reason, k.ref)
			d.failDec.Store(nil)

			if _, err := p.Unwrap(t.Context(), rec, aad); err != nil {
				t.Errorf("Unwrap after the failure cleared: %v", err)
			}
		})
	}
}

func checkMapped(t *testing.T, what string, err, want error, r reason, ref vault.KeyRef) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: %v, want %v", what, err, want)
		return
	}
	if want == vault.ErrKeyUnavailable {
		// Names the key, says why and what to do, shows the KMS's answer.
		wantErr(t, what, err, want, ref.String(), r.String(), advice(localScheme, "", "", r), "fake failure")
	}
	for _, other := range []error{vault.ErrKeyUnavailable, vault.ErrWrongKey, vault.ErrCorrupt, context.Canceled} {
		if other != want && errors.Is(err, other) {
			t.Errorf("%s: %v is also %v", what, err, other)
		}
	}
}

func TestOutcomes(t *testing.T) {
	for r := reasonUnknown; r <= reasonCanceled; r++ {
		enc, dec := encryptOutcome(r), decryptOutcome(r)
		wantEnc, wantDec := outUnavailable, outUnavailable
		switch r {
		case reasonCanceled:
			wantEnc, wantDec = outCanceled, outCanceled
		case reasonBadInput:
			wantDec = outWrongKey
		case reasonUnknown:
			wantDec = outProbe
		}
		if enc != wantEnc || dec != wantDec {
			t.Errorf("%v: encrypt %v decrypt %v, want %v %v", r, enc, dec, wantEnc, wantDec)
		}
		for _, s := range Schemes() {
			if advice(s, "transit", "k", r) == "" {
				t.Errorf("%s has no advice for %v", s, r)
			}
		}
	}
}

// What each SDK's own errors classify as, where the driver says more
// than gocloud's code.
func TestClassifyDriverErrors(t *testing.T) {
	grpcErr := func(c codes.Code) error { return status.Error(c, "fake") }
	aws := func(code string) error { return &smithy.GenericAPIError{Code: code, Message: "fake"} }
	cases := []struct {
		name string
		err  error
		want reason
	}{
		{"aws AccessDenied", aws("AccessDeniedException"), reasonDenied},
		{"aws InvalidGrantToken", aws("InvalidGrantTokenException"), reasonDenied},
		{"aws UnrecognizedClient", aws("UnrecognizedClientException"), reasonAuth},
		{"aws ExpiredToken", aws("ExpiredTokenException"), reasonAuth},
		{"aws NotFound", aws("NotFoundException"), reasonNotFound},
		{"aws Disabled", aws("DisabledException"), reasonDisabled},
		{"aws KMSInvalidState", aws("KMSInvalidStateException"), reasonDisabled},
		{"aws InvalidCiphertext", aws("InvalidCiphertextException"), reasonBadInput},
		{"aws IncorrectKey", aws("IncorrectKeyException"), reasonBadInput},
		{"aws InvalidKeyUsage", aws("InvalidKeyUsageException"), reasonUnusable},
		{"aws KMSInternal", aws("KMSInternalException"), reasonUnreachable},
		{"aws Throttling", aws("ThrottlingException"), reasonUnreachable},
		{"aws KeyUnavailable", aws("KeyUnavailableException"), reasonUnreachable},
		{"aws unknown exception", aws("SomethingNewException"), reasonUnknown},
		{"azure 400", &azcore.ResponseError{StatusCode: 400}, reasonBadInput},
		{"azure 401", &azcore.ResponseError{StatusCode: 401}, reasonAuth},
		{"azure 403", &azcore.ResponseError{StatusCode: 403}, reasonDenied},
		{"azure 404", &azcore.ResponseError{StatusCode: 404}, reasonNotFound},
		{"azure 429", &azcore.ResponseError{StatusCode: 429}, reasonUnreachable},
		{"azure 503", &azcore.ResponseError{StatusCode: 503}, reasonUnreachable},
		{"vault 400 key not found", &vaultapi.ResponseError{StatusCode: 400, Errors: []string{"encryption key not found"}}, reasonNotFound},
		{"vault 400 other", &vaultapi.ResponseError{StatusCode: 400, Errors: []string{"cipher: message authentication failed"}}, reasonUnknown},
		{"vault 403", &vaultapi.ResponseError{StatusCode: 403, Errors: []string{"permission denied"}}, reasonDenied},
		{"vault 503 sealed", &vaultapi.ResponseError{StatusCode: 503, Errors: []string{"Vault is sealed"}}, reasonUnreachable},
		{"grpc Unauthenticated", grpcErr(codes.Unauthenticated), reasonAuth},
		{"grpc PermissionDenied", grpcErr(codes.PermissionDenied), reasonDenied},
		{"grpc NotFound", grpcErr(codes.NotFound), reasonNotFound},
		{"grpc FailedPrecondition", grpcErr(codes.FailedPrecondition), reasonDisabled},
		{"grpc InvalidArgument", grpcErr(codes.InvalidArgument), reasonBadInput},
		{"grpc Unavailable", grpcErr(codes.Unavailable), reasonUnreachable},
		{"grpc Unimplemented", grpcErr(codes.Unimplemented), reasonUnusable},
		{"grpc Canceled", grpcErr(codes.Canceled), reasonCanceled},
		{"network", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, reasonUnreachable},
		{"aws no credentials", errors.New("operation error KMS: Encrypt, get identity: get credentials: failed to refresh cached credentials, no EC2 IMDS role found"), reasonAuth},
		{"google no credentials", errors.New("google: could not find default credentials"), reasonAuth},
		{"context canceled", fmt.Errorf("call: %w", context.Canceled), reasonCanceled},
		{"context deadline", fmt.Errorf("call: %w", context.DeadlineExceeded), reasonUnreachable},
		{"anything else", errors.New("localsecrets: Decrypt failed"), reasonUnknown},
	}
	for _, c := range cases {
		// As the Keeper returns them: wrapped, with gocloud's code.
		wrapped := fmt.Errorf("secrets (code=Unknown): %w", c.err)
		if got := classify(wrapped); got != c.want {
			t.Errorf("%s: classify = %v, want %v", c.name, got, c.want)
		}
	}
}
