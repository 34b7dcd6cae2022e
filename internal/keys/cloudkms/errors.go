//go:build !nocloudkms

package cloudkms

import (
	"context"
	"errors"
	"net"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/aws/smithy-go"
	vaultapi "github.com/hashicorp/vault/api"
	"gocloud.dev/gcerrors"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// reason is why a KMS call failed, as far as can be told.
type reason int

const (
	// reasonUnknown: the error does not say whether the key or the request
	// is at fault (gocloud's hashivault and localsecrets drivers classify
	// nothing; Vault answers 400 both for a damaged ciphertext and, in some
	// versions, for a missing key).
	reasonUnknown     reason = iota
	reasonDenied             // the identity may not use the key
	reasonAuth               // no credentials, or the service rejects them
	reasonNotFound           // no such key (or no such key visible to the identity)
	reasonDisabled           // the key exists but is disabled, pending deletion, destroyed
	reasonUnreachable        // network, timeouts, throttling, service errors
	reasonUnusable           // the key cannot encrypt and decrypt (wrong type or usage)
	reasonBadInput           // the KMS refused the data: on Decrypt, a ciphertext that is not this key's
	reasonCanceled           // the caller's context was canceled
)

func (r reason) String() string {
	switch r {
	case reasonDenied:
		return "access denied"
	case reasonAuth:
		return "no usable credentials"
	case reasonNotFound:
		return "key not found"
	case reasonDisabled:
		return "key disabled or not in a usable state"
	case reasonUnreachable:
		return "the KMS could not be reached or did not answer"
	case reasonUnusable:
		return "the key cannot be used to encrypt and decrypt"
	case reasonBadInput:
		return "the KMS refused the request"
	case reasonCanceled:
		return "canceled"
	}
	return "the KMS call failed"
}

// classify says why a gocloud Keeper call (or a provider's opening) failed.
// The driver's own error is asked first where it says more than gocloud's
// code (gocloud reports an AWS DisabledException and an Azure 401 as
// PermissionDenied, a gRPC Unauthenticated and every Vault error as
// Unknown); gcerrors.Code is the fallback for everything else.
func classify(err error) reason {
	if err == nil {
		return reasonUnknown
	}
	if errors.Is(err, context.Canceled) {
		return reasonCanceled
	}
	if r := classifyDriver(err); r != reasonUnknown {
		return r
	}
	if r := fromCode(gcerrors.Code(err)); r != reasonUnknown {
		return r
	}
	// An error gocloud could not classify: credentials that the SDK could
	// not find or use, or the network.
	msg := strings.ToLower(err.Error())
	if strings.Contains(msg, "credential") || strings.Contains(msg, "oauth2:") {
		return reasonAuth
	}
	if ne := net.Error(nil); errors.As(err, &ne) {
		return reasonUnreachable
	}
	return reasonUnknown
}

// fromCode maps a gocloud error code.
func fromCode(c gcerrors.ErrorCode) reason {
	switch c {
	case gcerrors.PermissionDenied:
		return reasonDenied
	case gcerrors.NotFound:
		return reasonNotFound
	case gcerrors.FailedPrecondition:
		return reasonDisabled
	case gcerrors.InvalidArgument:
		return reasonBadInput
	case gcerrors.DeadlineExceeded, gcerrors.ResourceExhausted, gcerrors.Internal:
		return reasonUnreachable
	case gcerrors.Unimplemented:
		return reasonUnusable
	case gcerrors.Canceled:
		return reasonCanceled
	}
	return reasonUnknown // Unknown, AlreadyExists (no KMS call creates anything), OK
}

// classifyDriver reads the SDK's error where one is wrapped.
func classifyDriver(err error) reason {
	var ae smithy.APIError // AWS
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "AccessDeniedException", "InvalidGrantTokenException":
			return reasonDenied
		case "UnrecognizedClientException", "InvalidSignatureException", "IncompleteSignature",
			"MissingAuthenticationToken", "MissingAuthenticationTokenException", "ExpiredTokenException",
			"InvalidClientTokenId", "SignatureDoesNotMatch":
			return reasonAuth
		case "NotFoundException":
			return reasonNotFound
		case "DisabledException", "KMSInvalidStateException":
			return reasonDisabled
		case "InvalidCiphertextException", "IncorrectKeyException":
			return reasonBadInput
		case "InvalidKeyUsageException", "UnsupportedOperationException":
			return reasonUnusable
		case "KMSInternalException", "DependencyTimeoutException", "KeyUnavailableException",
			"ThrottlingException", "LimitExceededException", "ServiceUnavailable", "InternalFailure", "RequestTimeout":
			return reasonUnreachable
		}
	}
	var re *azcore.ResponseError // Azure
	if errors.As(err, &re) {
		return fromHTTPStatus(re.StatusCode)
	}
	var afe *azidentity.AuthenticationFailedError
	if errors.As(err, &afe) {
		return reasonAuth
	}
	var ve *vaultapi.ResponseError // HashiCorp Vault, OpenBao
	if errors.As(err, &ve) {
		if ve.StatusCode == 400 {
			for _, e := range ve.Errors {
				if strings.Contains(e, "encryption key not found") {
					return reasonNotFound
				}
			}
			// Vault's transit engine answers 400 both for a ciphertext
			// that does not decrypt and for requests it cannot serve.
			return reasonUnknown
		}
		return fromHTTPStatus(ve.StatusCode)
	}
	if s, ok := status.FromError(err); ok { // GCP (gRPC)
		switch s.Code() {
		case codes.Unauthenticated:
			return reasonAuth
		case codes.PermissionDenied:
			return reasonDenied
		case codes.NotFound:
			return reasonNotFound
		case codes.FailedPrecondition:
			return reasonDisabled
		case codes.InvalidArgument, codes.OutOfRange:
			return reasonBadInput
		case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Internal, codes.Aborted:
			return reasonUnreachable
		case codes.Unimplemented:
			return reasonUnusable
		case codes.Canceled:
			return reasonCanceled
		}
	}
	return reasonUnknown
}

func fromHTTPStatus(code int) reason {
	switch {
	case code == 401:
		return reasonAuth
	case code == 403:
		return reasonDenied
	case code == 404:
		return reasonNotFound
	case code == 400 || code == 422:
		return reasonBadInput
	case code == 408 || code == 429 || code >= 500:
		return reasonUnreachable
	}
	return reasonUnknown
}

// outcome is what a failed KMS call means for the operation.
type outcome int

const (
	outUnavailable outcome = iota // vault.ErrKeyUnavailable
	outWrongKey                   // vault.ErrWrongKey: the record is at fault
	outProbe                      // cannot tell: try the key on a value of our own
	outCanceled                   // the caller gave up: context.Canceled, no key event
)

// encryptOutcome: Encrypt only ever gets a fresh random key to encrypt, so
// every failure is the key's (or its access's).
func encryptOutcome(r reason) outcome {
	if r == reasonCanceled {
		return outCanceled
	}
	return outUnavailable
}

// decryptOutcome: Decrypt gets the ciphertext from a record, which may be
// damaged. Only a KMS that examined the ciphertext and refused it
// (InvalidArgument: AWS InvalidCiphertextException, GCP INVALID_ARGUMENT,
// Azure 400) proves the record at fault; an unclassified failure is
// settled by a probe.
func decryptOutcome(r reason) outcome {
	switch r {
	case reasonBadInput:
		return outWrongKey
	case reasonUnknown:
		return outProbe
	case reasonCanceled:
		return outCanceled
	}
	return outUnavailable
}

// advice says what an operator does about r for a key of scheme.
func advice(scheme, engine, name string, r reason) string {
	switch scheme {
	case AWSKMS:
		switch r {
		case reasonDenied:
			return "grant the identity Coffer runs as kms:Encrypt and kms:Decrypt on this key (IAM policy or key policy), then retry"
		case reasonAuth:
			return "check the AWS credentials in Coffer's environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws, or the instance or task role)"
		case reasonNotFound:
			return "check the key ID or alias and the region (region= in the URI, or AWS_REGION)"
		case reasonDisabled:
			return "enable the key in AWS KMS (or cancel its deletion)"
		case reasonUnreachable:
			return "check the network path to AWS KMS, then retry"
		case reasonUnusable:
			return "use a symmetric ENCRYPT_DECRYPT key"
		}
		return "check the AWS credentials in Coffer's environment and that they may use kms:Encrypt and kms:Decrypt on this key"
	case AzureKeyVault:
		switch r {
		case reasonDenied:
			return "grant the identity Coffer runs as the encrypt and decrypt key operations on this key (Azure RBAC: a role with Microsoft.KeyVault/vaults/keys/encrypt/action and decrypt/action, such as Key Vault Crypto User, scoped to the key; access policies: the encrypt and decrypt key permissions), and check that the key version is enabled"
		case reasonAuth:
			return "check the Azure credentials in Coffer's environment (AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH, workload identity or managed identity: see DefaultAzureCredential)"
		case reasonNotFound:
			return "check the key vault, key name and version in the URI"
		case reasonDisabled:
			return "enable the key version"
		case reasonUnreachable:
			return "check the network path to the key vault, then retry"
		case reasonUnusable:
			return "use an RSA key whose permitted operations include encrypt and decrypt"
		}
		return "check the Azure credentials in Coffer's environment and that they may encrypt and decrypt with this key"
	case GCPKMS:
		switch r {
		case reasonDenied:
			return "grant the identity Coffer runs as roles/cloudkms.cryptoKeyEncrypterDecrypter on this key, then retry"
		case reasonAuth:
			return "check the Google credentials in Coffer's environment (GOOGLE_APPLICATION_CREDENTIALS, or the attached service account)"
		case reasonNotFound:
			return "check the project, location, key ring and key in the URI"
		case reasonDisabled:
			return "enable the key version that encrypted (or, for new wraps, the key's primary version); restore it if it is scheduled for destruction"
		case reasonUnreachable:
			return "check the network path to Cloud KMS, then retry"
		case reasonUnusable:
			return "use a symmetric ENCRYPT_DECRYPT key"
		}
		return "check the Google credentials in Coffer's environment and that they may encrypt and decrypt with this key"
	case HashiVault:
		policy := "give Coffer's Vault token a policy with the update capability on " + engine + "/encrypt/" + name + " and " + engine + "/decrypt/" + name
		switch r {
		case reasonDenied:
			return policy + ", and check that VAULT_SERVER_TOKEN (or VAULT_TOKEN) holds that token"
		case reasonAuth:
			return "set VAULT_SERVER_URL (or VAULT_ADDR) and VAULT_SERVER_TOKEN (or VAULT_TOKEN) in Coffer's environment"
		case reasonNotFound:
			return "check the key name and engine= in the URI: the key must exist in the transit engine"
		case reasonUnreachable:
			return "check VAULT_SERVER_URL (or VAULT_ADDR) and that Vault is reachable and unsealed, then retry"
		case reasonUnusable, reasonDisabled:
			return "use a transit key type that encrypts (aes256-gcm96, chacha20-poly1305, rsa-*)"
		}
		return policy
	}
	return "check the key and this server's access to it"
}
