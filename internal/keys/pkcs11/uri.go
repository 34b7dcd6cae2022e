package pkcs11

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// KeyType is the RFC 7512 "type" of the key object a URI names.
type KeyType string

const (
	// AnyType: the URI has no type attribute; Open looks for an RSA
	// private key, then an AES secret key, and fails if both match.
	AnyType KeyType = ""
	// PrivateKey is an RSA private key (type=private).
	PrivateKey KeyType = "private"
	// SecretKey is an AES-256 secret key (type=secret-key; type=secret is
	// accepted as an alias).
	SecretKey KeyType = "secret-key"
)

// PIN is a token user PIN. It never prints: String, GoString and every fmt
// verb give "[redacted]".
type PIN string

func (PIN) String() string                 { return "[redacted]" }
func (PIN) GoString() string               { return "[redacted]" }
func (PIN) Format(f fmt.State, _ rune)     { f.Write([]byte("[redacted]")) }
func (p PIN) reveal() string               { return string(p) }
func (p PIN) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// Config is a parsed PKCS#11 URI (RFC 7512) naming Coffer's key encryption
// key. Exactly one of PIN and PINSource is set, and exactly one of
// ModulePath and ModuleName.
type Config struct {
	Token      string  // token label (token=)
	Object     string  // key object label (object=); "" when only ID is given
	ID         []byte  // key object CKA_ID (id=, percent-encoded bytes); nil when only Object is given
	Type       KeyType // type=; AnyType when absent
	ModulePath string  // absolute path of the PKCS#11 module (module-path=)
	ModuleName string  // module name without directory or suffix (module-name=), looked up by Open
	PIN        PIN     // pin-value=
	PINSource  string  // absolute path of a file holding the PIN (pin-source=), read at every login
}

// String returns the URI in canonical form, without the PIN: a pin-value is
// left out, a pin-source (a file name) is kept.
func (c Config) String() string {
	var b strings.Builder
	b.WriteString("pkcs11:token=" + escape(c.Token, false))
	if c.Object != "" {
		b.WriteString(";object=" + escape(c.Object, false))
	}
	if c.ID != nil {
		b.WriteString(";id=" + escape(string(c.ID), false))
	}
	if c.Type != AnyType {
		b.WriteString(";type=" + string(c.Type))
	}
	var q []string
	if c.ModulePath != "" {
		q = append(q, "module-path="+escape(c.ModulePath, true))
	}
	if c.ModuleName != "" {
		q = append(q, "module-name="+escape(c.ModuleName, true))
	}
	if c.PINSource != "" {
		q = append(q, "pin-source="+escape(c.PINSource, true))
	}
	if len(q) > 0 {
		b.WriteString("?" + strings.Join(q, "&"))
	}
	return b.String()
}

// keyName is how messages name the key: token and object label (or ID).
func (c Config) keyName() string {
	s := fmt.Sprintf("token %q", c.Token)
	if c.Object != "" {
		s = fmt.Sprintf("key %q on %s", c.Object, s)
	} else {
		s = fmt.Sprintf("key id=%s on %s", escape(string(c.ID), false), s)
	}
	return s
}

// unsupportedPathAttr: attributes RFC 7512 defines that Coffer does not use
// for selection. A URI carrying one is refused rather than half-honoured:
// ignoring, say, serial= could select another token than the one meant.
func unsupportedPathAttr(name string) bool {
	switch name {
	case "manufacturer", "serial", "model", "library-manufacturer", "library-description",
		"library-version", "slot-description", "slot-manufacturer", "slot-id":
		return true
	}
	return false
}

// ParseURI parses an RFC 7512 PKCS#11 URI such as
//
//	pkcs11:token=coffer;object=backup-kek?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234
//
// Path attributes: token (required), object and/or id (at least one), type
// (private, secret-key; secret is an alias). Query attributes: module-path
// (absolute) or module-name (exactly one), pin-value or pin-source (exactly
// one; pin-source is "file:/path", "file:///path" or an absolute path; the
// "|command" form is refused). Values are percent-decoded; an attribute may
// appear once. Validation is strict: unknown or unsupported attributes,
// malformed escapes, characters RFC 7512 does not allow unescaped, and
// empty values are errors. Errors never contain the PIN, nor the URI.
func ParseURI(s string) (Config, error) {
	var c Config
	rest, ok := strings.CutPrefix(s, "pkcs11:")
	if !ok {
		return c, errors.New("pkcs11 URI must start with \"pkcs11:\"")
	}
	path, query, _ := strings.Cut(rest, "?")
	seen := map[string]bool{}
	if path != "" {
		for _, a := range strings.Split(path, ";") {
			name, raw, err := splitAttr(a, "path", seen)
			if err != nil {
				return Config{}, err
			}
			v, err := unescape(raw, false, name)
			if err != nil {
				return Config{}, err
			}
			switch name {
			case "token":
				c.Token = v
			case "object":
				c.Object = v
			case "id":
				c.ID = []byte(v)
			case "type":
				switch v {
				case "private":
					c.Type = PrivateKey
				case "secret-key", "secret":
					c.Type = SecretKey
				case "public", "cert", "data":
					return Config{}, fmt.Errorf("pkcs11 URI: type=%s cannot unwrap keys: use type=private (an RSA key) or type=secret-key (an AES key)", v)
				default:
					return Config{}, fmt.Errorf("pkcs11 URI: unknown type %q (RFC 7512 types: public, private, cert, secret-key, data)", v)
				}
			default:
				if unsupportedPathAttr(name) {
					return Config{}, fmt.Errorf("pkcs11 URI: attribute %q is not supported: select the token by its label (token=) and the key by object= and/or id=", name)
				}
				return Config{}, fmt.Errorf("pkcs11 URI: unknown path attribute %q", name)
			}
		}
	}
	if query != "" {
		for _, a := range strings.Split(query, "&") {
			name, raw, err := splitAttr(a, "query", seen)
			if err != nil {
				return Config{}, err
			}
			v, err := unescape(raw, true, name)
			if err != nil {
				return Config{}, err
			}
			switch name {
			case "module-path":
				if !filepath.IsAbs(v) {
					return Config{}, fmt.Errorf("pkcs11 URI: module-path %q is not an absolute path", v)
				}
				c.ModulePath = filepath.Clean(v)
			case "module-name":
				if strings.ContainsAny(v, "/\\") || v == "." || v == ".." {
					return Config{}, fmt.Errorf("pkcs11 URI: module-name %q must be a bare name (use module-path for a path)", v)
				}
				c.ModuleName = v
			case "pin-value":
				c.PIN = PIN(v)
			case "pin-source":
				p, err := pinSourcePath(v)
				if err != nil {
					return Config{}, err
				}
				c.PINSource = p
			default:
				return Config{}, fmt.Errorf("pkcs11 URI: unknown query attribute %q", name)
			}
		}
	}
	switch {
	case c.Token == "":
		return Config{}, errors.New("pkcs11 URI: token= (the token label) is required")
	case c.Object == "" && c.ID == nil:
		return Config{}, errors.New("pkcs11 URI: object= (the key label) or id= is required")
	case c.ModulePath != "" && c.ModuleName != "":
		return Config{}, errors.New("pkcs11 URI: give module-path or module-name, not both")
	case c.ModulePath == "" && c.ModuleName == "":
		return Config{}, errors.New("pkcs11 URI: module-path= (or module-name=) is required")
	case c.PIN != "" && c.PINSource != "":
		// RFC 7512 §2.4: a URI with both SHOULD be refused.
		return Config{}, errors.New("pkcs11 URI: give pin-value or pin-source, not both")
	case c.PIN == "" && c.PINSource == "":
		return Config{}, errors.New("pkcs11 URI: the user PIN is required: add pin-source=file:/path/to/pin-file (or pin-value=)")
	}
	return c, nil
}

// splitAttr splits name=value and rejects empty, repeated and vendor
// attributes. The error names the attribute, never its value.
func splitAttr(a, part string, seen map[string]bool) (name, value string, err error) {
	name, value, ok := strings.Cut(a, "=")
	if !ok || name == "" {
		return "", "", fmt.Errorf("pkcs11 URI: malformed %s attribute: want name=value", part)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return "", "", fmt.Errorf("pkcs11 URI: malformed %s attribute name", part)
		}
	}
	if strings.HasPrefix(name, "x-") {
		return "", "", fmt.Errorf("pkcs11 URI: vendor attribute %q is not supported", name)
	}
	if seen[name] {
		return "", "", fmt.Errorf("pkcs11 URI: attribute %q appears more than once", name)
	}
	seen[name] = true
	if value == "" {
		return "", "", fmt.Errorf("pkcs11 URI: attribute %q is empty", name)
	}
	return name, value, nil
}

// pinSourcePath turns a pin-source value into a file path.
func pinSourcePath(v string) (string, error) {
	switch {
	case strings.HasPrefix(v, "|"):
		return "", errors.New("pkcs11 URI: pin-source commands (\"|...\") are not supported: use a file (pin-source=file:/path)")
	case strings.HasPrefix(v, "file://"):
		v = strings.TrimPrefix(v, "file://")
		if !strings.HasPrefix(v, "/") {
			return "", errors.New("pkcs11 URI: pin-source file URI must have an empty host (file:///path)")
		}
	case strings.HasPrefix(v, "file:"):
		v = strings.TrimPrefix(v, "file:")
	}
	if !filepath.IsAbs(v) {
		return "", fmt.Errorf("pkcs11 URI: pin-source %q is not an absolute path", v)
	}
	return filepath.Clean(v), nil
}

// allowed reports whether RFC 7512 lets b appear unescaped in a path
// (pk11-pchar) or query (pk11-qchar) value.
func allowed(b byte, query bool) bool {
	switch {
	case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		return true
	}
	switch b {
	case '-', '.', '_', '~', // unreserved
		':', '[', ']', '@', '!', '$', '\'', '(', ')', '*', '+', ',', '=': // pk11-res-avail
		return true
	case '/', '?', '|': // pk11-res-avail-query adds these
		return query
	}
	return false
}

// unescape percent-decodes a value. Its errors name the attribute but never
// quote the value: it may be the PIN.
func unescape(s string, query bool, name string) (string, error) {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b == '%' {
			if i+2 >= len(s) || unhex(s[i+1]) < 0 || unhex(s[i+2]) < 0 {
				return "", fmt.Errorf("pkcs11 URI: attribute %q has a malformed percent-escape", name)
			}
			out = append(out, byte(unhex(s[i+1])<<4|unhex(s[i+2])))
			i += 2
			continue
		}
		if !allowed(b, query) {
			return "", fmt.Errorf("pkcs11 URI: attribute %q has a character that must be percent-encoded", name)
		}
		out = append(out, b)
	}
	return string(out), nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// escape percent-encodes every byte RFC 7512 does not allow unescaped.
func escape(s string, query bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if allowed(s[i], query) {
			b.WriteByte(s[i])
		} else {
			fmt.Fprintf(&b, "%%%02X", s[i])
		}
	}
	return b.String()
}
