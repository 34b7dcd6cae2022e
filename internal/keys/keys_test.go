package keys

import "testing"

func TestRedact(t *testing.T) {
	for uri, want := range map[string]string{
		"pkcs11:token=a;object=b?module-path=/m.so&pin-value=1234": "pkcs11:token=a;object=b?module-path=/m.so&pin-value=REDACTED",
		"hashivault://coffer?token=hvs.abc":                        "hashivault://coffer?token=REDACTED",
		"awskms://alias/coffer?endpoint=https://u:pw@kms.internal": "awskms://alias/coffer?endpoint=https%3A%2F%2Fu%3AREDACTED%40kms.internal",
		"awskms://alias/coffer?region=us-east-1":                   "awskms://alias/coffer?region=us-east-1",
		"rsa-file:///etc/coffer/cmk.pem":                           "rsa-file:///etc/coffer/cmk.pem",
	} {
		if got := Redact(uri); got != want {
			t.Errorf("Redact(%q) = %q, want %q", uri, got, want)
		}
	}
}
