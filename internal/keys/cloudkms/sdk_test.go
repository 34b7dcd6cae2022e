//go:build !nocloudkms

package cloudkms

// End-to-end error mapping: Open, gocloud's real driver and the real SDK,
// against a local fake of the service (fakes_test.go) answering as the
// service does in each failure; or, where the failure is in finding
// credentials, against nothing at all.

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"google.golang.org/grpc/codes"

	"github.com/coffer-backup/coffer/internal/vault"
)

var testAAD = []byte("vault-id-and-purpose")

// sdkCase is one failure: set makes the fake answer it; then Wrap (and,
// with a record wrapped before, Unwrap) must fail with want, saying has.
type sdkCase struct {
	name      string
	set       func()
	wantWrap  error
	wantUnwrp error
	has       []string
}

func runSDKCases(t *testing.T, p *Provider, reset func(), cases []sdkCase, secrets ...string) {
	t.Helper()
	secret := make([]byte, 32)
	rec := mustWrap(t, p, secret, testAAD)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer reset()
			c.set()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if c.wantWrap != nil {
				_, err := p.Wrap(ctx, secret, testAAD)
				wantErr(t, "Wrap", err, c.wantWrap, c.has...)
				noSecrets(t, err, secrets...)
			}
			if c.wantUnwrp != nil {
				got, err := p.Unwrap(ctx, rec, testAAD)
				if got != nil {
					t.Error("a failed Unwrap returned data")
				}
				wantErr(t, "Unwrap", err, c.wantUnwrp, c.has...)
				noSecrets(t, err, secrets...)
			}
		})
	}
	// And once the fault is gone, everything works again.
	if _, err := p.Unwrap(t.Context(), rec, testAAD); err != nil {
		t.Errorf("Unwrap after the faults: %v", err)
	}
}

func noSecrets(t *testing.T, err error, secrets ...string) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range secrets {
		if strings.Contains(err.Error(), s) {
			t.Errorf("the error shows a credential: %v", err)
		}
	}
}

func TestAWSSDK(t *testing.T) {
	awsEnv(t)
	f := newFakeAWS(t)
	const key = "alias/coffer"
	f.add(key)
	p, err := Open(t.Context(), f.uri(key))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if want := (vault.KeyRef{Provider: "awskms", KeyID: key}); p.Current() != want {
		t.Fatalf("Current() = %v, want %v", p.Current(), want)
	}
	exception := func(exc string, code int, only string) func() {
		return func() {
			f.answer(func(target string) (string, int) {
				if only == "" || target == "TrentService."+only {
					return exc, code
				}
				return "", 0
			})
		}
	}
	reset := func() { f.answer(nil); f.set(key, noFault) }
	runSDKCases(t, p, reset, []sdkCase{
		{"AccessDeniedException", func() { f.set(key, denied) }, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable,
			[]string{"awskms:alias/coffer", "access denied", "kms:Encrypt and kms:Decrypt", "AccessDeniedException"}},
		{"UnrecognizedClientException", exception("UnrecognizedClientException", 400, ""), vault.ErrKeyUnavailable, vault.ErrKeyUnavailable,
			[]string{"awskms:alias/coffer", "no usable credentials", "AWS_ACCESS_KEY_ID"}},
		{"NotFoundException", exception("NotFoundException", 400, ""), vault.ErrKeyUnavailable, vault.ErrKeyUnavailable,
			[]string{"key not found", "region"}},
		{"DisabledException", func() { f.set(key, disabled) }, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable,
			[]string{"disabled", "enable the key"}},
		{"KMSInvalidStateException", exception("KMSInvalidStateException", 400, ""), vault.ErrKeyUnavailable, vault.ErrKeyUnavailable,
			[]string{"disabled", "cancel its deletion"}},
		{"InvalidCiphertextException on Decrypt", exception("InvalidCiphertextException", 400, "Decrypt"), nil, vault.ErrWrongKey,
			[]string{"does not open", "InvalidCiphertextException"}},
		{"AccessDenied on Decrypt only", exception("AccessDeniedException", 400, "Decrypt"), vault.ErrKeyUnavailable, vault.ErrKeyUnavailable,
			[]string{"decrypt", "kms:Decrypt"}},
		// Retried by the SDK (gocloud's retryer: three attempts), so Wrap only.
		{"KeyUnavailableException", exception("KeyUnavailableException", 500, ""), vault.ErrKeyUnavailable, nil,
			[]string{"could not be reached", "network path to AWS KMS"}},
	}, "coffer-test-secret-access-key-not-real")

	// Wrap checks the KMS decrypts what it encrypted: an identity that may
	// encrypt but not decrypt wraps nothing.
	exception("AccessDeniedException", 400, "Decrypt")()
	_, err = p.Wrap(t.Context(), make([]byte, 32), testAAD)
	wantErr(t, "Wrap without decrypt permission", err, vault.ErrKeyUnavailable, "decrypt what it had just encrypted")
	reset()
}

func TestAWSSDKNoCredentials(t *testing.T) {
	awsEnv(t)
	f := newFakeAWS(t)
	f.add("alias/coffer")
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	p, err := Open(t.Context(), f.uri("alias/coffer"))
	if err != nil {
		t.Fatal(err) // the SDK resolves credentials at the first call
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err = p.Wrap(ctx, make([]byte, 32), testAAD)
	wantErr(t, "Wrap", err, vault.ErrKeyUnavailable, "awskms:alias/coffer", "no usable credentials", "AWS_ACCESS_KEY_ID")
	if n := f.callCount(); n != 0 {
		t.Errorf("the fake KMS was called %d times without credentials", n)
	}
}

func TestAWSSDKUnreachable(t *testing.T) {
	awsEnv(t)
	f := newFakeAWS(t)
	uri := f.uri("alias/coffer")
	f.srv.Close() // nothing listens there any more
	p, err := Open(t.Context(), uri)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err = p.Wrap(ctx, make([]byte, 32), testAAD)
	wantErr(t, "Wrap", err, vault.ErrKeyUnavailable, "could not be reached")
}

func TestAWSSDKBadProfile(t *testing.T) {
	awsEnv(t)
	_, err := Open(t.Context(), "awskms://alias/coffer?region=us-east-1&profile=no-such-profile")
	wantErr(t, "Open", err, vault.ErrKeyUnavailable, "awskms:alias/coffer", "no-such-profile", "AWS_PROFILE")
}

// AWS decrypts with the key a ciphertext names, whatever key the caller
// meant. A record relabelled as another key's therefore gets past the
// KMS wherever the identity may use both keys; binding the key reference
// into the GCM additional data stops it there.
func TestAWSRelabelledRecord(t *testing.T) {
	awsEnv(t)
	f := newFakeAWS(t)
	f.add("alias/a")
	f.add("alias/b")
	a, err := Open(t.Context(), f.uri("alias/a"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(t.Context(), f.uri("alias/b"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	w := mustWrap(t, a, make([]byte, 32), testAAD)
	w.KEK = b.Current()
	before := f.callCount()
	_, err = b.Unwrap(t.Context(), w, testAAD)
	wantErr(t, "Unwrap", err, vault.ErrWrongKey, "authentication failed")
	if f.callCount() != before+1 {
		t.Errorf("the KMS was called %d times, want once (its decryption succeeds)", f.callCount()-before)
	}
}

func TestVaultSDK(t *testing.T) {
	f := newFakeVault(t)
	f.env(t)
	f.add("coffer")
	p, err := Open(t.Context(), "hashivault://coffer")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if want := (vault.KeyRef{Provider: "hashivault", KeyID: "coffer"}); p.Current() != want {
		t.Fatalf("Current() = %v, want %v", p.Current(), want)
	}
	reset := func() {
		f.answer(0)
		f.answerEmpty(false)
		f.set("coffer", noFault)
		f.setToken("hvs.coffer-test-token-not-real")
	}
	runSDKCases(t, p, reset, []sdkCase{
		{"403 permission denied", func() { f.set("coffer", denied) }, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable,
			[]string{"hashivault:coffer", "access denied", "update capability on transit/encrypt/coffer and transit/decrypt/coffer", "permission denied"}},
		{"token not accepted", func() { f.setToken("another") }, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable,
			[]string{"access denied", "VAULT_SERVER_TOKEN"}},
		{"403 echoing the token", func() { f.answer(403, "permission denied for hvs.coffer-test-token-not-real") }, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable,
			[]string{"access denied", "[redacted]"}},
		{"key deleted", func() { f.set("coffer", missing) }, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable,
			nil},
		{"503 sealed", func() { f.answer(503, "Vault is sealed") }, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable,
			[]string{"could not be reached", "unsealed"}},
		{"204 without a body", func() { f.answerEmpty(true) }, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable,
			[]string{"driver failed on the KMS's answer"}},
	}, "hvs.coffer-test-token-not-real")

	// A ciphertext that transit does not decrypt: 400, which Vault also
	// answers for other things; the provider tries the key, which works,
	// so the record is at fault.
	w := mustWrap(t, p, make([]byte, 32), testAAD)
	w.Data[3+20] ^= 1 // inside the KMS ciphertext
	_, err = p.Unwrap(t.Context(), w, testAAD)
	// What transit says of it depends on where the flipped bit lands
	// (the base64, or the sealed bytes under it); either way it is the
	// record that is at fault.
	wantErr(t, "Unwrap of a damaged record", err, vault.ErrWrongKey, "does not decrypt the record's ciphertext")
}

func TestVaultSDKDeletedKey(t *testing.T) {
	f := newFakeVault(t)
	f.env(t)
	f.add("coffer")
	p, err := Open(t.Context(), "hashivault://coffer?engine=transit")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	w := mustWrap(t, p, make([]byte, 32), testAAD)
	f.set("coffer", missing)
	_, err = p.Unwrap(t.Context(), w, testAAD)
	wantErr(t, "Unwrap", err, vault.ErrKeyUnavailable, "hashivault:coffer", "key not found", "encryption key not found")
}

func TestVaultSDKEnvironment(t *testing.T) {
	f := newFakeVault(t)
	f.env(t)
	f.add("coffer")

	// VAULT_ADDR and VAULT_TOKEN, as gocloud reads them when
	// VAULT_SERVER_URL and VAULT_SERVER_TOKEN are unset.
	t.Setenv("VAULT_SERVER_URL", "")
	t.Setenv("VAULT_SERVER_TOKEN", "")
	t.Setenv("VAULT_ADDR", f.srv.URL)
	t.Setenv("VAULT_TOKEN", f.token)
	p, err := Open(t.Context(), "hashivault://coffer")
	if err != nil {
		t.Fatal(err)
	}
	mustWrap(t, p, make([]byte, 32), testAAD)
	p.Close()

	// Nothing set: Open says what to set. (gocloud's default opener would
	// keep this failure for the life of the process; Open does not.)
	t.Setenv("VAULT_ADDR", "")
	_, err = Open(t.Context(), "hashivault://coffer")
	wantErr(t, "Open without VAULT_SERVER_URL", err, vault.ErrKeyUnavailable, "hashivault:coffer", "VAULT_SERVER_URL (or VAULT_ADDR)")
	t.Setenv("VAULT_SERVER_URL", f.srv.URL)
	p, err = Open(t.Context(), "hashivault://coffer")
	if err != nil {
		t.Fatalf("Open once VAULT_SERVER_URL is set: %v", err)
	}
	mustWrap(t, p, make([]byte, 32), testAAD)
	p.Close()

	// Nothing listens.
	f.srv.Close()
	p, err = Open(t.Context(), "hashivault://coffer")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, err = p.Wrap(t.Context(), make([]byte, 32), testAAD)
	wantErr(t, "Wrap", err, vault.ErrKeyUnavailable, "could not be reached", "VAULT_SERVER_URL")
}

func TestGCPSDK(t *testing.T) {
	f := newFakeGCP(t)
	uri := gcpURI("coffer")
	name := strings.TrimPrefix(uri, "gcpkms://")
	f.add(name)
	p, err := open(t.Context(), uri, deps{gcpClient: f.client})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if want := (vault.KeyRef{Provider: "gcpkms", KeyID: name}); p.Current() != want {
		t.Fatalf("Current() = %v, want %v", p.Current(), want)
	}
	reset := func() { f.answer(codes.OK); f.set(name, noFault) }
	runSDKCases(t, p, reset, []sdkCase{
		{"PERMISSION_DENIED", func() { f.set(name, denied) }, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable,
			[]string{"gcpkms:" + name, "access denied", "roles/cloudkms.cryptoKeyEncrypterDecrypter"}},
		{"UNAUTHENTICATED", func() { f.set(name, unauth) }, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable,
			[]string{"no usable credentials", "GOOGLE_APPLICATION_CREDENTIALS"}},
		{"NOT_FOUND", func() { f.set(name, missing) }, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable,
			[]string{"key not found", "key ring"}},
		{"FAILED_PRECONDITION", func() { f.set(name, disabled) }, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable,
			[]string{"disabled", "enable the key version"}},
		{"INVALID_ARGUMENT on Decrypt", func() { f.set(name, badCiphertext) }, nil, vault.ErrWrongKey,
			[]string{"the KMS refused the record's ciphertext", "ciphertext is invalid"}},
	})

	// UNAVAILABLE is retried by the client until the deadline.
	f.answer(codes.Unavailable)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err = p.Wrap(ctx, make([]byte, 32), testAAD)
	wantErr(t, "Wrap while unavailable", err, vault.ErrKeyUnavailable, "could not be reached", "Cloud KMS")
	f.answer(codes.OK)
}

// Without credentials the real opener (Application Default Credentials)
// fails at once, before any network: GOOGLE_APPLICATION_CREDENTIALS names a
// file that does not exist.
func TestGCPSDKNoCredentials(t *testing.T) {
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", t.TempDir()+"/no-such-file.json")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := Open(ctx, gcpURI("coffer"))
	wantErr(t, "Open", err, vault.ErrKeyUnavailable, "gcpkms:projects/coffer-test/locations/global/keyRings/coffer/cryptoKeys/coffer",
		"no usable credentials", "GOOGLE_APPLICATION_CREDENTIALS", "no-such-file.json")
}

func TestAzureSDK(t *testing.T) {
	f := newFakeAzure(t)
	f.add(azureKeyName("coffer"))
	p, err := open(t.Context(), azureURI("coffer"), deps{azureClient: f.clientMaker(t, staticToken{})})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	want := vault.KeyRef{Provider: "azurekeyvault", KeyID: "coffertest.vault.azure.net/keys/coffer", Version: "0123456789abcdef0123456789abcdef"}
	if p.Current() != want {
		t.Fatalf("Current() = %v, want %v", p.Current(), want)
	}
	reset := func() { f.answer(0); f.set(azureKeyName("coffer"), noFault) }
	runSDKCases(t, p, reset, []sdkCase{
		{"403", func() { f.set(azureKeyName("coffer"), denied) }, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable,
			[]string{want.String(), "access denied", "Microsoft.KeyVault/vaults/keys/encrypt/action and decrypt/action"}},
		{"401", func() { f.set(azureKeyName("coffer"), unauth) }, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable,
			[]string{"no usable credentials", "DefaultAzureCredential"}},
		{"404", func() { f.set(azureKeyName("coffer"), missing) }, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable,
			[]string{"key not found"}},
		{"400 on decrypt", func() { f.set(azureKeyName("coffer"), badCiphertext) }, nil, vault.ErrWrongKey,
			[]string{"the KMS refused the record's ciphertext"}},
		{"503", func() { f.answer(503) }, vault.ErrKeyUnavailable, vault.ErrKeyUnavailable,
			[]string{"could not be reached"}},
	})
}

// DefaultAzureCredential with nothing to authenticate with: the token
// request fails in the SDK, before the key vault sees a token.
func TestAzureSDKNoCredentials(t *testing.T) {
	f := newFakeAzure(t)
	f.add(azureKeyName("coffer"))
	for _, v := range []string{"AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_USERNAME", "AZURE_FEDERATED_TOKEN_FILE"} {
		t.Setenv(v, "")
	}
	t.Setenv("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential") // no managed identity (a network call), no CLI
	cred, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := open(t.Context(), azureURI("coffer"), deps{azureClient: f.clientMaker(t, cred)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err = p.Wrap(ctx, make([]byte, 32), testAAD)
	wantErr(t, "Wrap", err, vault.ErrKeyUnavailable, "no usable credentials", "AZURE_TENANT_ID")
}

// The real opener (gocloud's DefaultClientMaker) fails at once when
// DefaultAzureCredential cannot be built.
func TestAzureSDKOpenFails(t *testing.T) {
	t.Setenv("AZURE_TOKEN_CREDENTIALS", "no-such-credential")
	_, err := Open(t.Context(), azureURI("coffer"))
	wantErr(t, "Open", err, vault.ErrKeyUnavailable, "azurekeyvault:coffertest.vault.azure.net/keys/coffer", "no usable credentials", "AZURE_TOKEN_CREDENTIALS")
}

func TestCanceled(t *testing.T) {
	awsEnv(t)
	f := newFakeAWS(t)
	f.add("alias/coffer")
	p, err := Open(t.Context(), f.uri("alias/coffer"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	w := mustWrap(t, p, make([]byte, 32), testAAD)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = p.Wrap(ctx, make([]byte, 32), testAAD)
	if !errors.Is(err, context.Canceled) || errors.Is(err, vault.ErrKeyUnavailable) {
		t.Errorf("Wrap with a canceled context: %v, want context.Canceled and not ErrKeyUnavailable", err)
	}
	_, err = p.Unwrap(ctx, w, testAAD)
	if !errors.Is(err, context.Canceled) || errors.Is(err, vault.ErrKeyUnavailable) {
		t.Errorf("Unwrap with a canceled context: %v, want context.Canceled and not ErrKeyUnavailable", err)
	}
}
