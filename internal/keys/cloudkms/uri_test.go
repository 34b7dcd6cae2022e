package cloudkms

import (
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/vault"
)

func TestParseURI(t *testing.T) {
	const uuid = "1234abcd-12ab-34cd-56ef-1234567890ab"
	const azv = "0123456789abcdef0123456789abcdef"
	cases := []struct {
		uri    string
		want   vault.KeyRef
		params string // Params, encoded
	}{
		{"awskms://alias/coffer?region=eu-west-1", vault.KeyRef{Provider: "awskms", KeyID: "alias/coffer"}, "region=eu-west-1"},
		{"awskms://alias/team/coffer-kek_1", vault.KeyRef{Provider: "awskms", KeyID: "alias/team/coffer-kek_1"}, ""},
		{"awskms://" + uuid + "?region=us-east-1", vault.KeyRef{Provider: "awskms", KeyID: uuid}, "region=us-east-1"},
		{"awskms://mrk-1234abcd12ab34cd56ef1234567890ab", vault.KeyRef{Provider: "awskms", KeyID: "mrk-1234abcd12ab34cd56ef1234567890ab"}, ""},
		{"awskms:///arn:aws:kms:us-east-1:111122223333:key/" + uuid, vault.KeyRef{Provider: "awskms", KeyID: "arn:aws:kms:us-east-1:111122223333:key/" + uuid}, ""},
		{"awskms:///arn:aws-us-gov:kms:us-gov-west-1:111122223333:alias/coffer", vault.KeyRef{Provider: "awskms", KeyID: "arn:aws-us-gov:kms:us-gov-west-1:111122223333:alias/coffer"}, ""},
		// Client configuration is not part of the key reference.
		{"awskms://alias/coffer?region=us-east-1&endpoint=https://kms.internal:8443&profile=backup&role=arn:aws:iam::111122223333:role/coffer&fips=true",
			vault.KeyRef{Provider: "awskms", KeyID: "alias/coffer"},
			"endpoint=https%3A%2F%2Fkms.internal%3A8443&fips=true&profile=backup&region=us-east-1&role=arn%3Aaws%3Aiam%3A%3A111122223333%3Arole%2Fcoffer"},
		{"azurekeyvault://myvault.vault.azure.net/keys/coffer-kek/" + azv,
			vault.KeyRef{Provider: "azurekeyvault", KeyID: "myvault.vault.azure.net/keys/coffer-kek", Version: azv}, ""},
		{"azurekeyvault://MyVault.Vault.Azure.Net/keys/coffer-kek/" + azv + "?algorithm=RSA-OAEP-256",
			vault.KeyRef{Provider: "azurekeyvault", KeyID: "myvault.vault.azure.net/keys/coffer-kek", Version: azv}, "algorithm=RSA-OAEP-256"},
		{"azurekeyvault://myvault.vault.azure.cn/keys/k/" + azv, vault.KeyRef{Provider: "azurekeyvault", KeyID: "myvault.vault.azure.cn/keys/k", Version: azv}, ""},
		{"gcpkms://projects/my-project/locations/europe-west1/keyRings/coffer/cryptoKeys/kek",
			vault.KeyRef{Provider: "gcpkms", KeyID: "projects/my-project/locations/europe-west1/keyRings/coffer/cryptoKeys/kek"}, ""},
		{"gcpkms://projects/example.com:my-project/locations/global/keyRings/r_1/cryptoKeys/k-1",
			vault.KeyRef{Provider: "gcpkms", KeyID: "projects/example.com:my-project/locations/global/keyRings/r_1/cryptoKeys/k-1"}, ""},
		{"hashivault://coffer", vault.KeyRef{Provider: "hashivault", KeyID: "coffer"}, ""},
		{"hashivault://coffer.kek_1?engine=transit", vault.KeyRef{Provider: "hashivault", KeyID: "coffer.kek_1"}, "engine=transit"},
		// Another transit mount may hold a key of the same name.
		{"hashivault://coffer?engine=kms/transit", vault.KeyRef{Provider: "hashivault", KeyID: "kms/transit/coffer"}, "engine=kms%2Ftransit"},
	}
	for _, c := range cases {
		r, err := ParseURI(c.uri)
		if err != nil {
			t.Errorf("ParseURI(%q): %v", c.uri, err)
			continue
		}
		if r.Key != c.want {
			t.Errorf("ParseURI(%q).Key = %+v, want %+v", c.uri, r.Key, c.want)
		}
		if got := r.Params.Encode(); got != c.params {
			t.Errorf("ParseURI(%q).Params = %q, want %q", c.uri, got, c.params)
		}
	}
}

func TestParseURIRejects(t *testing.T) {
	const azv = "0123456789abcdef0123456789abcdef"
	cases := []struct {
		uri  string
		says string // part of the error
	}{
		{"awskms://", "no key named"},
		{"awskms:alias/coffer", "want awskms://"},
		{"awskms://arn:aws:kms:us-east-1:111122223333:key/abc", "awskms:///arn:aws:kms"},
		{"awskms:///arn:aws:kms:us-east-1:1111:key/abc", "not a KMS key or alias ARN"},
		{"awskms://alias/", "not clean"},
		{"awskms://alias//coffer", "not clean"},
		{"awskms://alias/a/../b", "not clean"},
		{"awskms://alias/coffer#x", "fragment"},
		{"awskms://alias/a%2Fb", "escape"},
		{"awskms://alias/a\tb", "control character"},
		{"awskms://alias:99/coffer", "port"},
		{"awskms://alias/coffer?context_vault=prod", "encryption context is not supported"},
		{"awskms://alias/coffer?color=blue", `unknown parameter "color"`},
		{"awskms://alias/coffer?region=a&region=b", "given 2 times"},
		{"awskms://alias/coffer?endpoint=ftp://kms.internal", "not an http(s) URL"},
		{"awskms://alias/my key", "space"},
		{"awskms://key*", "not a KMS key ID"},
		{"azurekeyvault://myvault.vault.azure.net/keys/coffer", "name the key version"},
		{"azurekeyvault://myvault.vault.azure.net/secrets/coffer/" + azv, "does not name a key"},
		{"azurekeyvault://example.com/keys/coffer/" + azv, "is not a key vault"},
		{"azurekeyvault://myvault.vault.azure.net/keys/coffer/" + azv + "/x", "more than /keys/NAME/VERSION"},
		{"azurekeyvault://myvault.vault.azure.net/keys/cof_fer/" + azv, "key name"},
		{"azurekeyvault://myvault.vault.azure.net/keys/coffer/" + azv + "?algorithm=RSA1_5", "only RSA-OAEP-256"},
		{"azurekeyvault://myvault.vault.azure.net/keys/coffer/" + azv + "?api-version=7.4", "unknown parameter"},
		{"azurekeyvault://myvault.vault.azure.net:443/keys/coffer/" + azv, "port"},
		{"gcpkms:///projects/p1234/locations/global/keyRings/r/cryptoKeys/k", "two slashes, not three"},
		{"gcpkms://projects/p1234/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1", "not a key version"},
		{"gcpkms://projects/p1234/locations/global/keyRings/r", "not a key's resource name"},
		{"gcpkms://projects/p1234/locations/global/keyRings/r/cryptoKeys/k?additional_authenticated_data=YQ", "Coffer binds its own AAD"},
		{"gcpkms://projects/P_1/locations/global/keyRings/r/cryptoKeys/k", "not a project ID"},
		{"hashivault://", "no key named"},
		{"hashivault://a/b", "one path segment"},
		{"hashivault://k?engine=../sys", "not a mount path"},
		{"hashivault://k?token=hvs.secret", `unknown parameter "token"`},
		{"s3kms://k", "not a cloud KMS URI"},
	}
	for _, c := range cases {
		_, err := ParseURI(c.uri)
		if err == nil {
			t.Errorf("ParseURI(%q) succeeded", c.uri)
			continue
		}
		if !strings.Contains(err.Error(), c.says) {
			t.Errorf("ParseURI(%q): %v\nwant it to say %q", c.uri, err, c.says)
		}
	}
}

// Nothing secret a refused URI holds reaches the error.
func TestParseURIRedacts(t *testing.T) {
	for _, uri := range []string{
		"awskms://user:s3cr3t-pw@alias/coffer",
		"awskms://alias/coffer?endpoint=https://user:s3cr3t-pw@kms.internal",
		"awskms://alias/coffer?endpoint=https%3A%2F%2Fuser%3As3cr3t-pw%40kms.internal",
		"hashivault://k?token=s3cr3t-pw",
		"hashivault://k?VAULT_TOKEN=s3cr3t-pw&engine=transit",
		"awskms://user:s3cr3t-pw@alias:bad:port/x",
		"gcpkms://projects/p/x?client_secret=s3cr3t-pw",
	} {
		_, err := ParseURI(uri)
		if err == nil {
			t.Errorf("ParseURI(%q) succeeded", uri)
			continue
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("ParseURI(%q): the error shows the secret: %v", uri, err)
		}
		if r := Redact(uri); strings.Contains(r, "s3cr3t") || !strings.Contains(r, "REDACTED") {
			t.Errorf("Redact(%q) = %q", uri, r)
		}
	}
	for _, uri := range []string{
		"awskms://alias/coffer?region=us-east-1&endpoint=https://kms.internal",
		"azurekeyvault://myvault.vault.azure.net/keys/coffer/0123456789abcdef0123456789abcdef",
		"hashivault://coffer?engine=transit",
		"awskms://alias/%zz",
	} {
		if r := Redact(uri); r != uri {
			t.Errorf("Redact(%q) = %q: a URI without secrets must be returned as it is", uri, r)
		}
	}
}
