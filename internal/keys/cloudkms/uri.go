package cloudkms

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/coffer-backup/coffer/internal/vault"
)

// Provider names recorded in key references: the URI schemes.
const (
	AWSKMS        = "awskms"
	AzureKeyVault = "azurekeyvault"
	GCPKMS        = "gcpkms"
	HashiVault    = "hashivault"
)

// Schemes returns the URI schemes this package opens, which are also the
// provider names of the keys it wraps with.
func Schemes() []string { return []string{AWSKMS, AzureKeyVault, GCPKMS, HashiVault} }

// IsScheme reports whether scheme is one of Schemes.
func IsScheme(scheme string) bool {
	switch scheme {
	case AWSKMS, AzureKeyVault, GCPKMS, HashiVault:
		return true
	}
	return false
}

// Ref is a parsed cloud KMS URI.
type Ref struct {
	// Key is the key reference keyrings record: Provider is the scheme,
	// KeyID identifies the key (never a credential), Version is the key
	// version the URI pins, if any.
	Key vault.KeyRef
	// Params are the query parameters, which configure the client
	// (region=, endpoint=, profile=, role=, engine=, …) and are not part
	// of the key reference. None of them holds a secret: credentials come
	// from each SDK's standard environment, never from the URI.
	Params url.Values
}

// parsed is a Ref plus the URL handed to gocloud's opener.
type parsed struct {
	Ref
	u      *url.URL
	engine string // hashivault: the transit engine's mount path
}

// ParseURI validates a cloud KMS URI in gocloud.dev/secrets syntax without
// contacting anything, and returns the key reference it names:
//
//	awskms://alias/NAME?region=R                    KeyID alias/NAME
//	awskms://KEY-ID?region=R                        KeyID KEY-ID
//	awskms:///arn:aws:kms:R:ACCOUNT:key/KEY-ID      KeyID the ARN
//	azurekeyvault://VAULT.vault.azure.net/keys/NAME/VERSION
//	                                                KeyID VAULT.vault.azure.net/keys/NAME, Version VERSION
//	gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K
//	                                                KeyID projects/P/locations/L/keyRings/R/cryptoKeys/K
//	hashivault://NAME[?engine=MOUNT]                KeyID NAME (MOUNT/NAME for a mount other than transit)
//
// It is stricter than gocloud where gocloud's leniency would let a vault
// be wrapped by a key it could not unwrap with later: an Azure URI must
// name the key version (gocloud decrypts with the version the URI names,
// or with the latest one, which after a rotation is not the one that
// encrypted); and parameters that gocloud passes to the KMS as part of the
// ciphertext's context (AWS context_*=, GCP additional_authenticated_data=,
// Azure algorithm= other than RSA-OAEP-256) are refused, because they are
// not part of the key reference, so a changed URI would make every
// wrapped key fail to open. Coffer binds its own AAD (docs/format.md
// §1.1c).
func ParseURI(uri string) (Ref, error) {
	p, err := parse(uri)
	if err != nil {
		return Ref{}, err
	}
	return p.Ref, nil
}

func parse(uri string) (*parsed, error) {
	scheme, _, _ := strings.Cut(uri, ":")
	shown := Redact(uri)
	if hasControl(shown) {
		shown = strconv.Quote(shown) // no line breaks or escapes into a log
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("key URI %s: %s", shown, fmt.Sprintf(format, args...))
	}
	if !IsScheme(scheme) {
		return nil, bad("not a cloud KMS URI (want awskms://…, azurekeyvault://…, gcpkms://… or hashivault://…)") // unreachable through keys.Open
	}
	u, err := url.Parse(uri)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the URI, which may hold a password
		}
		if scheme == AWSKMS && strings.Contains(err.Error(), "port") {
			return nil, bad("%v: an ARN goes in the path, after three slashes: awskms:///arn:aws:kms:REGION:ACCOUNT:key/KEY-ID", err)
		}
		return nil, bad("%v", err)
	}
	keyPart, _, _ := strings.Cut(uri, "?")
	switch {
	case u.Opaque != "":
		return nil, bad("want %s://…", scheme)
	case u.User != nil:
		return nil, bad("credentials do not belong in the URI: Coffer takes them from the %s SDK's standard environment (docs/operations.md)", cloudName(scheme))
	case u.Fragment != "" || strings.Contains(uri, "#"):
		return nil, bad("a fragment (#…) is not allowed")
	case u.Port() != "":
		return nil, bad("a port is not allowed in the host")
	case strings.ContainsAny(keyPart, " %\\") || hasControl(keyPart):
		// gocloud takes the decoded path: an escape could hide a slash.
		return nil, bad("the key name holds a space, a control character, a backslash or a %%-escape")
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, bad("query: %v", err)
	}
	for k, vs := range q {
		if len(vs) != 1 {
			return nil, bad("parameter %q is given %d times", k, len(vs))
		}
		if hasControl(k) || hasControl(vs[0]) {
			return nil, bad("parameter %q holds a control character", k)
		}
	}
	p := &parsed{Ref: Ref{Key: vault.KeyRef{Provider: scheme}, Params: q}, u: u}
	switch scheme {
	case AWSKMS:
		err = p.aws(q)
	case AzureKeyVault:
		err = p.azure(q)
	case GCPKMS:
		err = p.gcp(q)
	case HashiVault:
		err = p.vault(q)
	}
	if err != nil {
		return nil, bad("%v", err)
	}
	return p, nil
}

func cloudName(scheme string) string {
	switch scheme {
	case AWSKMS:
		return "AWS"
	case AzureKeyVault:
		return "Azure"
	case GCPKMS:
		return "Google Cloud"
	case HashiVault:
		return "Vault"
	}
	return scheme
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// hostPath is what gocloud's openers take as the key: host and path joined
// (path.Join, which also cleans). A URI whose joined form differs from its
// text (a doubled or trailing slash, "..") is refused, so that the key ID
// Coffer records is the one gocloud uses.
func hostPath(u *url.URL) (string, error) {
	raw := u.Host + u.Path
	if j := path.Join(u.Host, u.Path); j != raw {
		return "", fmt.Errorf("the key name %q is not clean (gocloud would use %q)", raw, j)
	}
	return raw, nil
}

var (
	awsARN   = regexp.MustCompile(`^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key/[A-Za-z0-9-]+|alias/[A-Za-z0-9/_-]+)$`)
	awsAlias = regexp.MustCompile(`^alias/[A-Za-z0-9/_-]+$`)
	awsKeyID = regexp.MustCompile(`^[A-Za-z0-9-]{1,128}$`)
)

// awsParams are gocloud.dev/aws.V2ConfigFromURLParams' parameters: they
// configure the client.
const awsParams = "region, endpoint, profile, role, hostname_immutable, dualstack, fips, rate_limiter_capacity, anonymous, request_checksum_calculation, response_checksum_validation, awssdk"

func isAWSParam(k string) bool {
	switch k {
	case "region", "endpoint", "profile", "role", "hostname_immutable", "dualstack", "fips",
		"rate_limiter_capacity", "anonymous", "request_checksum_calculation", "response_checksum_validation", "awssdk":
		return true
	}
	return false
}

func (p *parsed) aws(q url.Values) error {
	const forms = "awskms://alias/NAME, awskms://KEY-ID or awskms:///arn:aws:kms:REGION:ACCOUNT:key/KEY-ID"
	// gocloud: keyID = strings.TrimPrefix(path.Join(u.Host, u.Path), "/").
	hp, err := hostPath(p.u)
	if err != nil {
		return err
	}
	id := strings.TrimPrefix(hp, "/")
	switch {
	case id == "":
		return fmt.Errorf("no key named: want %s", forms)
	case strings.HasPrefix(id, "arn:"):
		if !awsARN.MatchString(id) {
			return fmt.Errorf("%q is not a KMS key or alias ARN (arn:aws:kms:REGION:ACCOUNT:key/KEY-ID)", id)
		}
	case strings.HasPrefix(id, "alias/"):
		if !awsAlias.MatchString(id) {
			return fmt.Errorf("%q is not a KMS alias (alias/NAME)", id)
		}
	case !awsKeyID.MatchString(id):
		return fmt.Errorf("%q is not a KMS key ID, alias or ARN: want %s", id, forms)
	}
	for k, vs := range q {
		switch {
		case strings.HasPrefix(k, "context_"):
			return fmt.Errorf("parameter %q: an encryption context is not supported: it would have to match on every decryption but is not part of the key reference; Coffer binds its own context (docs/format.md §1.1c)", k)
		case !isAWSParam(k):
			return fmt.Errorf("unknown parameter %q (awskms takes %s)", k, awsParams)
		case k == "endpoint":
			if err := checkEndpoint(vs[0]); err != nil {
				return err
			}
		}
	}
	p.Key.KeyID = id
	return nil
}

func checkEndpoint(v string) error {
	e, err := url.Parse(v)
	if err != nil || (e.Scheme != "https" && e.Scheme != "http") || e.Host == "" {
		return fmt.Errorf("endpoint=%s is not an http(s) URL", redactValue(v))
	}
	if e.User != nil {
		return fmt.Errorf("endpoint=%s: credentials do not belong in the URI", redactValue(v))
	}
	return nil
}

var (
	// azureHost is gocloud's `.+\.vault\.(?:[a-z\d-.]+)` with Key Vault's
	// rule for vault names (3 to 24 letters, digits and dashes).
	azureHost    = regexp.MustCompile(`^[a-z0-9-]{3,24}\.vault\.[a-z0-9.-]+$`)
	azureName    = regexp.MustCompile(`^[0-9A-Za-z-]{1,127}$`)
	azureVersion = regexp.MustCompile(`^[0-9A-Za-z]{1,64}$`)
)

func (p *parsed) azure(q url.Values) error {
	const form = "azurekeyvault://VAULT.vault.azure.net/keys/NAME/VERSION"
	// Host names are case-insensitive and gocloud's pattern wants them in
	// lower case.
	p.u.Host = strings.ToLower(p.u.Host)
	if _, err := hostPath(p.u); err != nil {
		return err
	}
	if !azureHost.MatchString(p.u.Host) {
		return fmt.Errorf("host %q is not a key vault (want %s)", p.u.Host, form)
	}
	parts := strings.Split(strings.TrimPrefix(p.u.Path, "/"), "/")
	if len(parts) < 2 || parts[0] != "keys" || !strings.HasPrefix(p.u.Path, "/") {
		return fmt.Errorf("path %q does not name a key (want %s)", p.u.Path, form)
	}
	if !azureName.MatchString(parts[1]) {
		return fmt.Errorf("key name %q: want 1 to 127 letters, digits and dashes", parts[1])
	}
	switch {
	case len(parts) == 2:
		// Without a version gocloud decrypts with the latest one: after a
		// key rotation every key wrapped before it would fail to open.
		return fmt.Errorf("name the key version (want %s): Azure decrypts only with the version that encrypted, and without one gocloud uses the latest, which changes when the key is rotated", form)
	case len(parts) > 3:
		return fmt.Errorf("path %q has more than /keys/NAME/VERSION", p.u.Path)
	case !azureVersion.MatchString(parts[2]):
		return fmt.Errorf("key version %q: want letters and digits", parts[2])
	}
	for k, vs := range q {
		switch {
		case k != "algorithm":
			return fmt.Errorf("unknown parameter %q (azurekeyvault takes algorithm=RSA-OAEP-256)", k)
		case vs[0] != "RSA-OAEP-256":
			// The algorithm must be the same for every decryption but is
			// not part of the key reference; RSA-OAEP-256 is gocloud's
			// default and the one RSA key algorithm without a weakness
			// (RSA1_5) or SHA-1 (RSA-OAEP).
			return fmt.Errorf("algorithm=%s: only RSA-OAEP-256 (the default) is supported", vs[0])
		}
	}
	p.Key.KeyID = p.u.Host + "/keys/" + parts[1]
	p.Key.Version = parts[2]
	return nil
}

var (
	gcpProject = regexp.MustCompile(`^[a-z0-9][a-z0-9.:-]{0,99}$`)
	gcpLoc     = regexp.MustCompile(`^[a-z0-9-]{1,63}$`)
	gcpName    = regexp.MustCompile(`^[A-Za-z0-9_-]{1,63}$`)
)

func (p *parsed) gcp(q url.Values) error {
	const form = "gcpkms://projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/KEY"
	hp, err := hostPath(p.u)
	if err != nil {
		return err
	}
	s := strings.Split(hp, "/")
	switch {
	case p.u.Host == "" && strings.HasPrefix(hp, "/projects/"):
		return fmt.Errorf("want two slashes, not three: %s", form)
	case len(s) == 10 && s[8] == "cryptoKeyVersions":
		return fmt.Errorf("name the key, not a key version (want %s): Cloud KMS encrypts with the key's primary version and decrypts with the version that encrypted", form)
	case len(s) != 8 || s[0] != "projects" || s[2] != "locations" || s[4] != "keyRings" || s[6] != "cryptoKeys":
		return fmt.Errorf("%q is not a key's resource name (want %s)", hp, form)
	case !gcpProject.MatchString(s[1]):
		return fmt.Errorf("project %q is not a project ID", s[1])
	case !gcpLoc.MatchString(s[3]):
		return fmt.Errorf("location %q is not a location", s[3])
	case !gcpName.MatchString(s[5]) || !gcpName.MatchString(s[7]):
		return fmt.Errorf("key ring %q or key %q: want 1 to 63 letters, digits, _ and -", s[5], s[7])
	}
	for k := range q {
		if k == "additional_authenticated_data" {
			return fmt.Errorf("parameter %q is not supported: it would have to match on every decryption but is not part of the key reference; Coffer binds its own AAD (docs/format.md §1.1c)", k)
		}
		return fmt.Errorf("unknown parameter %q (gcpkms takes none)", k)
	}
	p.Key.KeyID = hp
	return nil
}

var (
	// vaultName is Vault's framework.GenericNameRegex, which transit key
	// names follow.
	vaultName  = regexp.MustCompile(`^\w([\w.-]*\w)?$`)
	vaultMount = regexp.MustCompile(`^[\w.-]+(/[\w.-]+)*$`)
)

func (p *parsed) vault(q url.Values) error {
	const form = "hashivault://KEY-NAME or hashivault://KEY-NAME?engine=MOUNT"
	hp, err := hostPath(p.u)
	if err != nil {
		return err
	}
	if hp == "" {
		return fmt.Errorf("no key named: want %s", form)
	}
	if !vaultName.MatchString(hp) {
		return fmt.Errorf("%q is not a transit key name (letters, digits, _, - and ., one path segment): want %s", hp, form)
	}
	p.engine = "transit" // gocloud's default
	for k, vs := range q {
		if k != "engine" {
			return fmt.Errorf("unknown parameter %q (hashivault takes engine=MOUNT)", k)
		}
		if !vaultMount.MatchString(vs[0]) || slices.Contains(strings.Split(vs[0], "/"), "..") {
			return fmt.Errorf("engine=%q is not a mount path", vs[0])
		}
		p.engine = vs[0]
	}
	// The mount is part of the key's identity: two transit engines may
	// each hold a key of the same name.
	p.Key.KeyID = hp
	if p.engine != "transit" {
		p.Key.KeyID = p.engine + "/" + hp
	}
	return nil
}

var (
	userinfo = regexp.MustCompile(`(//[^/?#@:]*:)[^/?#@]*@`)
	// secretParam matches parameter names that announce a secret. No
	// parameter of the four schemes is one; a URI that has one is refused,
	// and shown redacted.
	secretParam = regexp.MustCompile(`(?i)token|secret|password|passwd|credential|pin`)
	secretValue = regexp.MustCompile(`(?i)((?:^|[?&;])[^=&;]*(?:token|secret|password|passwd|credential|pin)[^=&;]*=)[^&;#]*`)
)

// Redact hides whatever secret a cloud KMS URI could hold so that it can be
// shown or logged: a password in the user info, or in a URL given as a
// parameter (endpoint=https://user:password@host), and the value of a
// parameter whose name says it is a secret (token=…). ParseURI refuses
// all of them, but a URI being refused is also shown. A URI without any
// is returned unchanged.
func Redact(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		// Unparsable: redact whatever looks like user:password@ or a
		// secret parameter.
		return secretValue.ReplaceAllString(userinfo.ReplaceAllString(uri, "${1}REDACTED@"), "${1}REDACTED")
	}
	changed := false
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "REDACTED")
			changed = true
		}
	}
	if q, err := url.ParseQuery(u.RawQuery); err == nil {
		qc := false
		for k, vs := range q {
			for i, v := range vs {
				r := redactValue(v)
				if secretParam.MatchString(k) {
					r = "REDACTED"
				}
				if r != v {
					vs[i], qc = r, true
				}
			}
		}
		if qc {
			u.RawQuery, changed = q.Encode(), true
		}
	} else if r := secretValue.ReplaceAllString(userinfo.ReplaceAllString(u.RawQuery, "${1}REDACTED@"), "${1}REDACTED"); r != u.RawQuery {
		u.RawQuery, changed = r, true
	}
	if !changed {
		return uri
	}
	return u.String()
}

// redactValue hides a password in a parameter that is a URL.
func redactValue(v string) string {
	e, err := url.Parse(v)
	if err != nil {
		return userinfo.ReplaceAllString(v, "${1}REDACTED@")
	}
	if e.User == nil {
		return v
	}
	if _, has := e.User.Password(); !has {
		return v
	}
	e.User = url.UserPassword(e.User.Username(), "REDACTED")
	return e.String()
}
