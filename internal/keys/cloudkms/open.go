//go:build !nocloudkms

package cloudkms

import (
	"context"
	"fmt"
	"os"
	"time"

	kmsapi "cloud.google.com/go/kms/apiv1"
	vaultapi "github.com/hashicorp/vault/api"
	"gocloud.dev/gcp"
	"gocloud.dev/secrets"
	"gocloud.dev/secrets/awskms"
	"gocloud.dev/secrets/azurekeyvault"
	"gocloud.dev/secrets/gcpkms"
	"gocloud.dev/secrets/hashivault"
)

// vaultTimeout bounds a Vault request: gocloud's hashivault driver does
// not pass the caller's context to the Vault client.
const vaultTimeout = 60 * time.Second

// deps are what Open uses to reach each cloud; the zero value is the
// production setup. Tests replace the clients that cannot be pointed at a
// local server through the URI or the environment.
type deps struct {
	// getenv reads hashivault's environment; nil means os.Getenv.
	getenv func(string) string
	// azureClient makes the Key Vault client for a vault URL; nil means
	// gocloud's azurekeyvault.DefaultClientMaker (DefaultAzureCredential).
	azureClient azurekeyvault.ClientMakerT
	// gcpClient makes the Cloud KMS client; nil means one with Application
	// Default Credentials, as gocloud's default gcpkms opener makes.
	gcpClient func(ctx context.Context) (*kmsapi.KeyManagementClient, error)
}

func open(ctx context.Context, uri string, d deps) (*Provider, error) {
	pu, err := parse(uri)
	if err != nil {
		return nil, err
	}
	ref := pu.Key
	// Until the Provider exists its error helpers are not available; this
	// one has the same shape.
	fail := func(r reason, err error, scrub ...string) error {
		tmp := &Provider{ref: ref, scheme: ref.Provider, engine: pu.engine, name: hostName(pu), scrub: scrub}
		if r == reasonUnknown {
			r = reasonAuth // opening reads configuration and credentials, nothing else
		}
		return tmp.failed("open", "configure the client", r, err)
	}
	var (
		keeper  *secrets.Keeper
		closers []func() error
		scrub   []string
	)
	switch ref.Provider {
	case AWSKMS:
		// gocloud's opener: aws.V2ConfigFromURLParams (the URI's region=,
		// endpoint=, profile=, role=, …) over the SDK's default
		// configuration and credential chain.
		keeper, err = (&awskms.URLOpener{}).OpenKeeperURL(ctx, pu.u)
		if err != nil {
			return nil, fail(classify(err), err)
		}
	case AzureKeyVault:
		maker := d.azureClient
		if maker == nil {
			maker = azurekeyvault.DefaultClientMaker
		}
		keeper, err = (&azurekeyvault.URLOpener{ClientMaker: maker}).OpenKeeperURL(ctx, pu.u)
		if err != nil {
			return nil, fail(classify(err), err)
		}
	case GCPKMS:
		var client *kmsapi.KeyManagementClient
		if d.gcpClient != nil {
			client, err = d.gcpClient(ctx)
		} else {
			client, err = dialGCP(ctx)
		}
		if err != nil {
			return nil, fail(classify(err), err)
		}
		keeper, err = (&gcpkms.URLOpener{Client: client}).OpenKeeperURL(ctx, pu.u)
		if err != nil {
			client.Close()
			return nil, fail(classify(err), err)
		}
		closers = append(closers, client.Close)
	case HashiVault:
		getenv := d.getenv
		if getenv == nil {
			getenv = os.Getenv
		}
		// The variables gocloud's default hashivault opener reads, read at
		// every Open rather than once per process.
		addr := firstSet(getenv, "VAULT_SERVER_URL", "VAULT_ADDR")
		token := firstSet(getenv, "VAULT_SERVER_TOKEN", "VAULT_TOKEN")
		scrub = []string{token}
		if addr == "" {
			return nil, fail(reasonAuth, fmt.Errorf("neither VAULT_SERVER_URL nor VAULT_ADDR is set"))
		}
		client, err := hashivault.Dial(ctx, &hashivault.Config{Token: token, APIConfig: vaultapi.Config{Address: addr, Timeout: vaultTimeout}})
		if err != nil {
			return nil, fail(reasonAuth, err, token)
		}
		keeper, err = (&hashivault.URLOpener{Client: client}).OpenKeeperURL(ctx, pu.u)
		if err != nil {
			return nil, fail(reasonUnknown, err, token)
		}
	}
	p, err := newProvider(ref, ref.Provider, keeper)
	if err != nil {
		keeper.Close()
		for _, c := range closers {
			c()
		}
		return nil, err
	}
	p.engine, p.name, p.scrub = pu.engine, hostName(pu), scrub
	p.closers = append(p.closers, closers...)
	return p, nil
}

// dialGCP makes a Cloud KMS client the way gocloud's default gcpkms opener
// does (Application Default Credentials), but per call. The credentials'
// token source keeps the context it was made with for its refreshes, so
// it gets one that is never canceled.
func dialGCP(ctx context.Context) (*kmsapi.KeyManagementClient, error) {
	long := context.WithoutCancel(ctx)
	creds, err := gcp.DefaultCredentials(long)
	if err != nil {
		return nil, err
	}
	client, _, err := gcpkms.Dial(long, creds.TokenSource)
	return client, err
}

func firstSet(getenv func(string) string, names ...string) string {
	for _, n := range names {
		if v := getenv(n); v != "" {
			return v
		}
	}
	return ""
}

// hostName is the key's name for hashivault's advice.
func hostName(pu *parsed) string {
	if pu.Key.Provider != HashiVault {
		return ""
	}
	return pu.u.Host + pu.u.Path
}
