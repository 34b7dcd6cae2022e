package format

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// TestKeyringInfoCarriesNoSecrets: coffer cat keyring prints a
// KeyringInfo. The type has no byte-slice or array field anywhere (where
// a key would live), and Info of a keyring full of secrets encodes none
// of them. A field added later that could hold key bytes fails here.
func TestKeyringInfoCarriesNoSecrets(t *testing.T) {
	var check func(reflect.Type, string)
	check = func(ty reflect.Type, at string) {
		switch ty.Kind() {
		case reflect.Slice, reflect.Array:
			if ty.Elem().Kind() == reflect.Uint8 {
				t.Errorf("%s is %s: KeyringInfo must not be able to hold key bytes", at, ty)
			}
			check(ty.Elem(), at+"[]")
		case reflect.Pointer:
			check(ty.Elem(), at)
		case reflect.Struct:
			if ty == reflect.TypeOf(time.Time{}) {
				return
			}
			for i := range ty.NumField() {
				check(ty.Field(i).Type, at+"."+ty.Field(i).Name)
			}
		}
	}
	check(reflect.TypeOf(KeyringInfo{}), "KeyringInfo")

	secret := func(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }
	kr := &Keyring{Format: 2, Vault: "v", Generation: 3, Root: secret(0xa1), MAC: secret(0xa2), CurrentDEK: 2,
		KEK:    KeyringKEK{Provider: "platform", KeyID: "k", Version: "1", Alg: "hkdf-aes-256-gcm"},
		DEKs:   []KeyringDEK{{Version: 1, Wrapped: secret(0xa3)}, {Version: 2, Wrapped: secret(0xa4)}},
		Config: &Config{Format: 2, ID: "v", PackSize: 1 << 24}}
	b, err := json.Marshal(kr.Info())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range [][]byte{kr.Root, kr.MAC, kr.DEKs[0].Wrapped, kr.DEKs[1].Wrapped} {
		enc, _ := json.Marshal(s)
		if bytes.Contains(b, enc[1:len(enc)-1]) {
			t.Errorf("Info encodes a secret: %s", b)
		}
	}
	if info := kr.Info(); len(info.DEKs) != 2 || info.DEKs[1].Version != 2 || info.Generation != 3 || info.KEK.Provider != "platform" {
		t.Errorf("Info lost metadata: %+v", info)
	}
}
