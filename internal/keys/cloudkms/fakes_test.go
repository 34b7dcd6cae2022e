//go:build !nocloudkms

package cloudkms

// Fakes of the four KMS services' wire protocols, so that the real SDKs,
// through gocloud's real drivers, can be tested without a network. They
// are fakes: each "encrypts" with AES-256-GCM under a key of its own, not
// with the service's algorithms or ciphertext formats, and answers only
// the two calls gocloud makes (encrypt and decrypt) with the status codes
// and error bodies the services document. What they establish is that
// Coffer maps what the SDK makes of each answer correctly; not that the
// service answers so.

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	kmsapi "cloud.google.com/go/kms/apiv1"
	"cloud.google.com/go/kms/apiv1/kmspb"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/coffer-backup/coffer/internal/seal"
)

// fault is what a fake answers instead of doing its job.
type fault string

const (
	noFault       fault = ""
	denied        fault = "denied"          // the identity may not use the key
	unauth        fault = "unauthenticated" // the credentials are not accepted
	missing       fault = "not-found"       // no such key
	disabled      fault = "disabled"        // the key is disabled
	badCiphertext fault = "bad-ciphertext"  // the ciphertext does not decrypt (set by the fake itself)
	overloaded    fault = "unavailable"     // the service cannot answer now
)

// fakeKMS is the key store behind every fake: named keys, each an
// AES-256-GCM key, each with a fault that, when set, every call on the key
// answers with.
type fakeKMS struct {
	mu     sync.Mutex
	keys   map[string]cipher.AEAD
	faults map[string]fault
	calls  int
}

func newFakeKMS() *fakeKMS {
	return &fakeKMS{keys: map[string]cipher.AEAD{}, faults: map[string]fault{}}
}

// add creates key name.
func (f *fakeKMS) add(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys[name] = seal.NewAEAD(seal.NewRandomKey())
}

// set makes every call on key name answer with fl (noFault: work again).
func (f *fakeKMS) set(name string, fl fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults[name] = fl
}

func (f *fakeKMS) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeKMS) key(name string) (cipher.AEAD, fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if fl := f.faults[name]; fl != noFault {
		return nil, fl
	}
	k, found := f.keys[name]
	if !found {
		return nil, missing
	}
	return k, noFault
}

// encrypt returns nonce || GCM(pt), with the key name as additional data.
func (f *fakeKMS) encrypt(name string, pt []byte) ([]byte, fault) {
	k, fl := f.key(name)
	if fl != noFault {
		return nil, fl
	}
	nonce := make([]byte, 12)
	rand.Read(nonce)
	return k.Seal(nonce, nonce, pt, []byte(name)), noFault
}

func (f *fakeKMS) decrypt(name string, ct []byte) ([]byte, fault) {
	k, fl := f.key(name)
	if fl != noFault {
		return nil, fl
	}
	if len(ct) < 12 {
		return nil, badCiphertext
	}
	pt, err := k.Open(nil, ct[:12], ct[12:], []byte(name))
	if err != nil {
		return nil, badCiphertext
	}
	return pt, noFault
}

func readJSON(t testing.TB, r *http.Request, v any) bool {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return false
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Errorf("fake: request body %q: %v", b, err)
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, contentType string, code int, v any) {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// --- AWS KMS: the JSON 1.1 protocol (X-Amz-Target: TrentService.*). ---

// fakeAWS serves KMS's Encrypt and Decrypt. Like AWS, a ciphertext names
// its key and Decrypt uses that key, whatever key the caller meant.
type fakeAWS struct {
	*fakeKMS
	srv *httptest.Server
	mu  sync.Mutex
	// override, when it returns a non-empty exception name, answers every
	// call with that exception and status.
	override func(target string) (exception string, status int)
}

// answer sets the override (nil: none).
func (f *fakeAWS) answer(o func(target string) (string, int)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.override = o
}

func newFakeAWS(t testing.TB) *fakeAWS {
	f := &fakeAWS{fakeKMS: newFakeKMS()}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target := r.Header.Get("X-Amz-Target")
		if !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 Credential=AKIDCOFFERTEST/") {
			f.fail(w, "UnrecognizedClientException", 400)
			return
		}
		f.mu.Lock()
		override := f.override
		f.mu.Unlock()
		if override != nil {
			if exc, code := override(target); exc != "" {
				f.fail(w, exc, code)
				return
			}
		}
		switch target {
		case "TrentService.Encrypt":
			var req struct {
				KeyId     string
				Plaintext []byte
			}
			if !readJSON(t, r, &req) {
				f.fail(w, "ValidationException", 400)
				return
			}
			ct, fl := f.encrypt(req.KeyId, req.Plaintext)
			if fl != noFault {
				f.fault(w, fl)
				return
			}
			blob := append([]byte{byte(len(req.KeyId))}, req.KeyId...)
			writeJSON(w, "application/x-amz-json-1.1", 200, map[string]any{"CiphertextBlob": append(blob, ct...), "KeyId": req.KeyId, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"})
		case "TrentService.Decrypt":
			var req struct {
				CiphertextBlob []byte
				KeyId          string
			}
			if !readJSON(t, r, &req) {
				f.fail(w, "ValidationException", 400)
				return
			}
			b := req.CiphertextBlob
			if len(b) < 1 || len(b) < 1+int(b[0]) {
				f.fail(w, "InvalidCiphertextException", 400)
				return
			}
			name := string(b[1 : 1+int(b[0])])
			if req.KeyId != "" && req.KeyId != name {
				f.fail(w, "IncorrectKeyException", 400)
				return
			}
			pt, fl := f.decrypt(name, b[1+int(b[0]):])
			if fl == missing {
				fl = badCiphertext // AWS cannot tell a damaged key name from a damaged blob
			}
			if fl != noFault {
				f.fault(w, fl)
				return
			}
			writeJSON(w, "application/x-amz-json-1.1", 200, map[string]any{"Plaintext": pt, "KeyId": name, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"})
		default:
			f.fail(w, "UnknownOperationException", 400)
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAWS) fault(w http.ResponseWriter, fl fault) {
	switch fl {
	case denied:
		f.fail(w, "AccessDeniedException", 400)
	case unauth:
		f.fail(w, "UnrecognizedClientException", 400)
	case missing:
		f.fail(w, "NotFoundException", 400)
	case disabled:
		f.fail(w, "DisabledException", 400)
	case badCiphertext:
		f.fail(w, "InvalidCiphertextException", 400)
	case overloaded:
		f.fail(w, "KMSInternalException", 500)
	}
}

func (f *fakeAWS) fail(w http.ResponseWriter, exception string, code int) {
	w.Header().Set("X-Amzn-ErrorType", exception)
	writeJSON(w, "application/x-amz-json-1.1", code, map[string]string{"__type": exception, "message": "fake " + exception})
}

// awsEnv points the AWS SDK at static fake credentials and nothing else
// (no shared files, no instance metadata), so that it never leaves the
// machine.
func awsEnv(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":                      "AKIDCOFFERTEST",
		"AWS_SECRET_ACCESS_KEY":                  "coffer-test-secret-access-key-not-real",
		"AWS_SESSION_TOKEN":                      "",
		"AWS_REGION":                             "us-east-1",
		"AWS_DEFAULT_REGION":                     "",
		"AWS_PROFILE":                            "",
		"AWS_CONFIG_FILE":                        dir + "/config",
		"AWS_SHARED_CREDENTIALS_FILE":            dir + "/credentials",
		"AWS_EC2_METADATA_DISABLED":              "true",
		"AWS_ENDPOINT_URL":                       "",
		"AWS_ENDPOINT_URL_KMS":                   "",
		"AWS_ROLE_ARN":                           "",
		"AWS_WEB_IDENTITY_TOKEN_FILE":            "",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI":     "",
	} {
		t.Setenv(k, v)
	}
}

// uri is an awskms URI for key on f.
func (f *fakeAWS) uri(key string) string {
	return "awskms://" + key + "?region=us-east-1&endpoint=" + f.srv.URL
}

// --- HashiCorp Vault: transit's encrypt and decrypt endpoints. ---

type fakeVault struct {
	*fakeKMS
	srv   *httptest.Server
	token string
	// status, when non-zero, answers every call with it and errors.
	status int
	errors []string
	// empty answers 204 No Content (no secret) to every call.
	empty bool
	mu    sync.Mutex
}

func newFakeVault(t testing.TB) *fakeVault {
	f := &fakeVault{fakeKMS: newFakeKMS(), token: "hvs.coffer-test-token-not-real"}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		st, errs, empty, token := f.status, f.errors, f.empty, f.token
		f.mu.Unlock()
		if r.Header.Get("X-Vault-Token") != token {
			f.fail(w, 403, "permission denied")
			return
		}
		if st != 0 {
			f.fail(w, st, errs...)
			return
		}
		if empty {
			w.WriteHeader(204)
			return
		}
		op, name, found := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v1/transit/"), "/")
		if !found || (r.Method != http.MethodPut && r.Method != http.MethodPost) {
			f.fail(w, 404, "no handler for route")
			return
		}
		switch op {
		case "encrypt":
			var req struct {
				Plaintext string `json:"plaintext"`
			}
			if !readJSON(t, r, &req) {
				f.fail(w, 400, "bad request")
				return
			}
			pt, err := base64.StdEncoding.DecodeString(req.Plaintext)
			if err != nil {
				f.fail(w, 400, "failed to base64-decode plaintext")
				return
			}
			ct, fl := f.encrypt(name, pt)
			if fl != noFault {
				f.fault(w, fl, true)
				return
			}
			writeJSON(w, "application/json", 200, map[string]any{"data": map[string]any{"ciphertext": "vault:v1:" + base64.StdEncoding.EncodeToString(ct), "key_version": 1}})
		case "decrypt":
			var req struct {
				Ciphertext string `json:"ciphertext"`
			}
			if !readJSON(t, r, &req) {
				f.fail(w, 400, "bad request")
				return
			}
			b64, found := strings.CutPrefix(req.Ciphertext, "vault:v1:")
			ct, err := base64.StdEncoding.DecodeString(b64)
			if !found || err != nil {
				f.fail(w, 400, "invalid ciphertext: no prefix")
				return
			}
			pt, fl := f.decrypt(name, ct)
			if fl != noFault {
				f.fault(w, fl, false)
				return
			}
			writeJSON(w, "application/json", 200, map[string]any{"data": map[string]any{"plaintext": base64.StdEncoding.EncodeToString(pt)}})
		default:
			f.fail(w, 404, "no handler for route")
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// fault answers as Vault does: a policy without the capability is 403; a
// missing key is 400 "encryption key not found" on decrypt and, for a token
// without the create capability, 403 on encrypt (which would create it);
// a ciphertext that does not open is 400.
func (f *fakeVault) fault(w http.ResponseWriter, fl fault, encrypt bool) {
	switch fl {
	case denied, unauth:
		f.fail(w, 403, "permission denied")
	case missing:
		if encrypt {
			f.fail(w, 403, "permission denied")
		} else {
			f.fail(w, 400, "encryption key not found")
		}
	case disabled:
		f.fail(w, 400, "key is not allowed to be used")
	case badCiphertext:
		f.fail(w, 400, "cipher: message authentication failed")
	case overloaded:
		f.fail(w, 503, "Vault is sealed")
	}
}

func (f *fakeVault) fail(w http.ResponseWriter, code int, errs ...string) {
	if errs == nil {
		errs = []string{}
	}
	writeJSON(w, "application/json", code, map[string]any{"errors": errs})
}

func (f *fakeVault) answer(code int, errs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status, f.errors = code, errs
}

// setToken makes f accept only token.
func (f *fakeVault) setToken(token string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.token = token
}

func (f *fakeVault) answerEmpty(empty bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.empty = empty
}

// env points gocloud's hashivault environment at f.
func (f *fakeVault) env(t *testing.T) {
	t.Helper()
	t.Setenv("VAULT_SERVER_URL", f.srv.URL)
	t.Setenv("VAULT_SERVER_TOKEN", f.token)
	t.Setenv("VAULT_ADDR", "")
	t.Setenv("VAULT_TOKEN", "")
	t.Setenv("VAULT_NAMESPACE", "")
	t.Setenv("VAULT_HEADERS", "")
}

// --- Google Cloud KMS: gRPC KeyManagementService.Encrypt and Decrypt. ---

type fakeGCP struct {
	kmspb.UnimplementedKeyManagementServiceServer
	*fakeKMS
	addr string
	// override, when it returns a non-OK code, answers every call with it.
	mu       sync.Mutex
	override codes.Code
}

func newFakeGCP(t testing.TB) *fakeGCP {
	f := &fakeGCP{fakeKMS: newFakeKMS()}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	kmspb.RegisterKeyManagementServiceServer(s, f)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	f.addr = lis.Addr().String()
	return f
}

func (f *fakeGCP) answer(c codes.Code) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.override = c
}

func (f *fakeGCP) overridden() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.override != codes.OK {
		return status.Error(f.override, "fake "+f.override.String())
	}
	return nil
}

func (f *fakeGCP) status(fl fault) error {
	switch fl {
	case denied:
		return status.Error(codes.PermissionDenied, "Permission 'cloudkms.cryptoKeyVersions.useToEncrypt' denied (fake)")
	case unauth:
		return status.Error(codes.Unauthenticated, "Request had invalid authentication credentials (fake)")
	case missing:
		return status.Error(codes.NotFound, "CryptoKey not found (fake)")
	case disabled:
		return status.Error(codes.FailedPrecondition, "CryptoKeyVersion is not enabled (fake)")
	case badCiphertext:
		return status.Error(codes.InvalidArgument, "Decryption failed: the ciphertext is invalid (fake)")
	case overloaded:
		return status.Error(codes.Unavailable, "service unavailable (fake)")
	}
	return nil
}

func (f *fakeGCP) Encrypt(_ context.Context, req *kmspb.EncryptRequest) (*kmspb.EncryptResponse, error) {
	if err := f.overridden(); err != nil {
		return nil, err
	}
	ct, fl := f.encrypt(req.GetName(), req.GetPlaintext())
	if fl != noFault {
		return nil, f.status(fl)
	}
	return &kmspb.EncryptResponse{Name: req.GetName() + "/cryptoKeyVersions/1", Ciphertext: ct}, nil
}

func (f *fakeGCP) Decrypt(_ context.Context, req *kmspb.DecryptRequest) (*kmspb.DecryptResponse, error) {
	if err := f.overridden(); err != nil {
		return nil, err
	}
	pt, fl := f.decrypt(req.GetName(), req.GetCiphertext())
	if fl != noFault {
		return nil, f.status(fl)
	}
	return &kmspb.DecryptResponse{Plaintext: pt}, nil
}

// client is what deps.gcpClient returns: the real Cloud KMS client,
// without credentials, over plain gRPC to f.
func (f *fakeGCP) client(ctx context.Context) (*kmsapi.KeyManagementClient, error) {
	return kmsapi.NewKeyManagementClient(ctx,
		option.WithEndpoint(f.addr),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
}

func gcpURI(key string) string {
	return "gcpkms://projects/coffer-test/locations/global/keyRings/coffer/cryptoKeys/" + key
}

// --- Azure Key Vault: REST keys/{name}/{version}/encrypt and decrypt. ---

type fakeAzure struct {
	*fakeKMS
	srv *httptest.Server
	mu  sync.Mutex
	// status, when non-zero, answers every authenticated call with it.
	status int
}

func newFakeAzure(t testing.TB) *fakeAzure {
	f := &fakeAzure{fakeKMS: newFakeKMS()}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			// Key Vault's authentication challenge, which the SDK answers
			// by getting a token for the resource it names.
			w.Header().Set("WWW-Authenticate", `Bearer authorization="https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000", resource="https://vault.azure.net"`)
			f.fail(w, 401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
			return
		}
		if r.Header.Get("Authorization") != "Bearer coffer-test-token" {
			f.fail(w, 401, "Unauthorized", "AKV10032: Invalid issuer.")
			return
		}
		f.mu.Lock()
		st := f.status
		f.mu.Unlock()
		if st != 0 {
			f.fail(w, st, http.StatusText(st), "fake")
			return
		}
		// /keys/{name}/{version}/{op}
		parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
		if len(parts) != 4 || parts[0] != "keys" || r.Method != http.MethodPost {
			f.fail(w, 404, "NotFound", "no such route")
			return
		}
		name := parts[1] + "/" + parts[2]
		var req struct {
			Alg   string `json:"alg"`
			Value string `json:"value"`
		}
		if !readJSON(t, r, &req) {
			f.fail(w, 400, "BadParameter", "bad body")
			return
		}
		if req.Alg != "RSA-OAEP-256" {
			t.Errorf("fake Azure: algorithm %q, want RSA-OAEP-256", req.Alg)
		}
		in, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(req.Value, "="))
		if err != nil {
			f.fail(w, 400, "BadParameter", "value is not base64url")
			return
		}
		var out []byte
		var fl fault
		switch parts[3] {
		case "encrypt":
			out, fl = f.encrypt(name, in)
		case "decrypt":
			out, fl = f.decrypt(name, in)
		default:
			f.fail(w, 404, "NotFound", "no such operation")
			return
		}
		if fl != noFault {
			f.fault(w, fl)
			return
		}
		writeJSON(w, "application/json", 200, map[string]string{"kid": "https://coffertest.vault.azure.net/keys/" + name, "value": base64.RawURLEncoding.EncodeToString(out)})
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAzure) answer(code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status = code
}

func (f *fakeAzure) fault(w http.ResponseWriter, fl fault) {
	switch fl {
	case denied:
		f.fail(w, 403, "Forbidden", "The user, group or application does not have keys encrypt permission (fake)")
	case unauth:
		f.fail(w, 401, "Unauthorized", "fake")
	case missing:
		f.fail(w, 404, "KeyNotFound", "A key with (name/id) was not found in this key vault (fake)")
	case disabled:
		f.fail(w, 403, "Forbidden", "Operation decrypt is not allowed on a disabled key (fake)")
	case badCiphertext:
		f.fail(w, 400, "BadParameter", "The parameter is incorrect (fake)")
	case overloaded:
		f.fail(w, 503, "ServiceUnavailable", "fake")
	}
}

func (f *fakeAzure) fail(w http.ResponseWriter, code int, errCode, msg string) {
	writeJSON(w, "application/json", code, map[string]any{"error": map[string]string{"code": errCode, "message": msg}})
}

// staticToken is an Azure credential that always has a token.
type staticToken struct{}

func (staticToken) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: "coffer-test-token", ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// clientMaker is what deps.azureClient returns: the real Key Vault client,
// with cred, to f (whatever vault the URI names, which it checks).
func (f *fakeAzure) clientMaker(t testing.TB, cred azcore.TokenCredential) func(string) (*azkeys.Client, error) {
	return func(vaultURL string) (*azkeys.Client, error) {
		if vaultURL != "https://coffertest.vault.azure.net/" {
			t.Errorf("gocloud asked for a client for %q, want https://coffertest.vault.azure.net/", vaultURL)
		}
		return azkeys.NewClient(f.srv.URL, cred, &azkeys.ClientOptions{
			ClientOptions: policy.ClientOptions{
				Transport: f.srv.Client(),
				Retry:     policy.RetryOptions{MaxRetries: -1},
			},
			DisableChallengeResourceVerification: true,
		})
	}
}

// azureURI names version v1 of key on the fake's vault; the fake keys it
// as "key/v1".
func azureURI(key string) string {
	return fmt.Sprintf("azurekeyvault://coffertest.vault.azure.net/keys/%s/0123456789abcdef0123456789abcdef", key)
}

func azureKeyName(key string) string { return key + "/0123456789abcdef0123456789abcdef" }
