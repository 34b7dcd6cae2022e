package pkcs11

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// testPIN is distinctive, so a leak into an error message is easy to spot.
const testPIN = "s3cr3t-PIN-7781"

func TestParseURI(t *testing.T) {
	const mod = "module-path=/usr/lib/softhsm/libsofthsm2.so"
	valid := []struct {
		uri  string
		want Config
	}{
		{"pkcs11:token=coffer;object=backup-kek?" + mod + "&pin-value=" + testPIN,
			Config{Token: "coffer", Object: "backup-kek", ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PIN: testPIN}},
		{"pkcs11:token=coffer;id=%01?" + mod + "&pin-value=1234",
			Config{Token: "coffer", ID: []byte{1}, ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PIN: "1234"}},
		{"pkcs11:object=backup%20aes;token=My%20Token;id=%02%ff;type=secret-key?pin-source=file:/etc/coffer/pin&module-name=softhsm2",
			Config{Token: "My Token", Object: "backup aes", ID: []byte{2, 0xff}, Type: SecretKey, ModuleName: "softhsm2", PINSource: "/etc/coffer/pin"}},
		{"pkcs11:token=coffer;object=k;type=secret?" + mod + "&pin-source=file:///run/pin",
			Config{Token: "coffer", Object: "k", Type: SecretKey, ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PINSource: "/run/pin"}},
		{"pkcs11:token=coffer;object=k;type=private?" + mod + "&pin-source=/run/secrets/pin",
			Config{Token: "coffer", Object: "k", Type: PrivateKey, ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PINSource: "/run/secrets/pin"}},
		// Characters RFC 7512 allows unescaped; "%2F" for a slash in a path value.
		{"pkcs11:token=a:b@c!$'()*+,=;object=x%2Fy~_.-?" + mod + "&pin-value=p/q?r|s:t=u",
			Config{Token: "a:b@c!$'()*+,=", Object: "x/y~_.-", ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PIN: "p/q?r|s:t=u"}},
		{"pkcs11:token=coffer;object=k?" + mod + "&pin-value=%26%3D%25",
			Config{Token: "coffer", Object: "k", ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PIN: "&=%"}},
	}
	for _, tc := range valid {
		t.Run("valid", func(t *testing.T) {
			got, err := ParseURI(tc.uri)
			if err != nil {
				t.Fatalf("ParseURI: %v", err)
			}
			if got.Token != tc.want.Token || got.Object != tc.want.Object || !bytes.Equal(got.ID, tc.want.ID) ||
				got.Type != tc.want.Type || got.ModulePath != tc.want.ModulePath || got.ModuleName != tc.want.ModuleName ||
				got.PIN.reveal() != tc.want.PIN.reveal() || got.PINSource != tc.want.PINSource {
				t.Fatalf("got  %#v %q\nwant %#v %q", got, got.PIN.reveal(), tc.want, tc.want.PIN.reveal())
			}
			// String is canonical and round-trips, minus the PIN.
			s := got.String()
			if strings.Contains(s, "pin-value") {
				t.Fatalf("String shows the PIN: %s", s)
			}
			again, err := ParseURI(s + pinSuffix(s))
			if err != nil {
				t.Fatalf("reparse %s: %v", s, err)
			}
			if again.String() != s {
				t.Fatalf("not canonical: %s -> %s", s, again.String())
			}
		})
	}

	invalid := []struct{ uri, want string }{
		{"", `must start with "pkcs11:"`},
		{"PKCS11:token=coffer;object=k?" + mod + "&pin-value=" + testPIN, `must start with "pkcs11:"`},
		{"pkcs11:object=k?" + mod + "&pin-value=" + testPIN, "token= (the token label) is required"},
		{"pkcs11:token=coffer?" + mod + "&pin-value=" + testPIN, "object= (the key label) or id= is required"},
		{"pkcs11:token=coffer;object=k?pin-value=" + testPIN, "module-path= (or module-name=) is required"},
		{"pkcs11:token=coffer;object=k?" + mod, "the user PIN is required"},
		{"pkcs11:token=coffer;object=k?" + mod + "&pin-value=" + testPIN + "&pin-source=/p", "pin-value or pin-source, not both"},
		{"pkcs11:token=coffer;object=k?" + mod + "&module-name=softhsm2&pin-value=" + testPIN, "module-path or module-name, not both"},
		{"pkcs11:token=coffer;token=other;object=k?" + mod + "&pin-value=" + testPIN, `"token" appears more than once`},
		{"pkcs11:token=coffer;object=k?" + mod + "&pin-value=" + testPIN + "&pin-value=" + testPIN, `"pin-value" appears more than once`},
		{"pkcs11:token=coffer;object=k;serial=1234?" + mod + "&pin-value=" + testPIN, `"serial" is not supported`},
		{"pkcs11:token=coffer;object=k;slot-id=1?" + mod + "&pin-value=" + testPIN, `"slot-id" is not supported`},
		{"pkcs11:token=coffer;object=k;colour=red?" + mod + "&pin-value=" + testPIN, `unknown path attribute "colour"`},
		{"pkcs11:token=coffer;object=k?" + mod + "&pin-value=" + testPIN + "&x-vendor=1", `vendor attribute "x-vendor"`},
		{"pkcs11:token=coffer;object=k?" + mod + "&pin-value=" + testPIN + "&flavour=1", `unknown query attribute "flavour"`},
		{"pkcs11:token=coffer;object=k;type=cert?" + mod + "&pin-value=" + testPIN, "type=cert cannot unwrap keys"},
		{"pkcs11:token=coffer;object=k;type=rsa?" + mod + "&pin-value=" + testPIN, `unknown type "rsa"`},
		{"pkcs11:token=coffer;object=k?" + mod + "&pin-value=" + testPIN + "%zz", `"pin-value" has a malformed percent-escape`},
		{"pkcs11:token=coffer;object=k?" + mod + "&pin-value=" + testPIN + "%4", `"pin-value" has a malformed percent-escape`},
		{"pkcs11:token=coffer;object=k?" + mod + "&pin-value=" + testPIN + " x", `"pin-value" has a character that must be percent-encoded`},
		{"pkcs11:token=coffer;object=a/b?" + mod + "&pin-value=" + testPIN, `"object" has a character that must be percent-encoded`},
		{"pkcs11:token=coffer;object=k?" + mod + "&pin-value=", `"pin-value" is empty`},
		{"pkcs11:token=coffer;object=?" + mod + "&pin-value=" + testPIN, `"object" is empty`},
		{"pkcs11:token=coffer;object?" + mod + "&pin-value=" + testPIN, "malformed path attribute"},
		{"pkcs11:token=coffer;;object=k?" + mod + "&pin-value=" + testPIN, "malformed path attribute"},
		{"pkcs11:token=coffer;object=k?" + mod + "&&pin-value=" + testPIN, "malformed query attribute"},
		{"pkcs11:token=coffer;Object=k?" + mod + "&pin-value=" + testPIN, "malformed path attribute name"},
		{"pkcs11:token=coffer;object=k?module-path=lib/softhsm2.so&pin-value=" + testPIN, "is not an absolute path"},
		{"pkcs11:token=coffer;object=k?module-name=/usr/lib/x.so&pin-value=" + testPIN, "must be a bare name"},
		{"pkcs11:token=coffer;object=k?" + mod + "&pin-source=%7C/usr/bin/pinentry", "pin-source commands"},
		{"pkcs11:token=coffer;object=k?" + mod + "&pin-source=pin.txt", "is not an absolute path"},
		{"pkcs11:token=coffer;object=k?" + mod + "&pin-source=file://host/pin", "must have an empty host"},
	}
	for _, tc := range invalid {
		t.Run("invalid", func(t *testing.T) {
			_, err := ParseURI(tc.uri)
			if err == nil {
				t.Fatalf("ParseURI(%q) succeeded", tc.uri)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseURI(%q): %v\nwant it to say %q", tc.uri, err, tc.want)
			}
			if strings.Contains(err.Error(), testPIN) || strings.Contains(err.Error(), "s3cr3t") {
				t.Fatalf("error contains the PIN: %v", err)
			}
		})
	}
}

// pinSuffix adds a PIN to a canonical URI that lost its pin-value.
func pinSuffix(s string) string {
	if strings.Contains(s, "pin-source=") {
		return ""
	}
	return "&pin-value=x"
}

func TestPINNeverPrints(t *testing.T) {
	c, err := ParseURI("pkcs11:token=coffer;object=k?module-path=/m.so&pin-value=" + testPIN)
	if err != nil {
		t.Fatal(err)
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		for _, v := range []any{c, &c, c.PIN} {
			if s := fmt.Sprintf(verb, v); strings.Contains(s, testPIN) || strings.Contains(s, fmt.Sprintf("%x", testPIN)) {
				t.Fatalf("%s of %T shows the PIN: %s", verb, v, s)
			}
		}
	}
}

func FuzzParseURI(f *testing.F) {
	f.Add("pkcs11:token=coffer;object=backup-kek?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234")
	f.Add("pkcs11:token=coffer;id=%01;type=secret-key?module-name=softhsm2&pin-source=file:/p")
	f.Add("pkcs11:token=a;object=b?module-path=/m&pin-value=%zz")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseURI(s)
		if err != nil {
			return
		}
		// A parsed URI prints canonically and parses back to the same.
		again, err := ParseURI(c.String() + pinSuffix(c.String()))
		if err != nil {
			t.Fatalf("reparse %q: %v", c.String(), err)
		}
		if again.String() != c.String() {
			t.Fatalf("not canonical: %q -> %q", c.String(), again.String())
		}
	})
}
