// Package posture provides Coffer's compliance checks and the evidence
// report built from them (docs/posture.md): each check reads facts from a
// vault's real configuration and state (its keyring, settings, snapshots,
// check runs, the server's TLS configuration and audit log), never from
// what a user claims, and says pass, fail, warn or n/a with the facts it
// read, where and when, what to do about a failure, and the controls it
// supports. The report is rendered as text, JSON, HTML and Markdown; a
// server signs it with its audit key (sign.go).
package posture

import (
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/coffer-backup/coffer/internal/vault"
)

// Schema names the JSON report's format; a change that is not a pure
// addition of optional fields changes it (docs/posture.md).
const Schema = "coffer.posture/v1"

// Status is a check's outcome.
type Status string

const (
	Pass Status = "pass"
	Warn Status = "warn"
	Fail Status = "fail"
	NA   Status = "n/a" // the check cannot apply (a local vault has no TLS)
)

// rank orders statuses from best to worst, for a summary's worst status.
func (s Status) rank() int {
	switch s {
	case Pass:
		return 1
	case Warn:
		return 2
	case Fail:
		return 3
	}
	return 0
}

// Check ids (docs/posture.md describes each).
const (
	CheckAtRest        = "encryption.at-rest"
	CheckKeySource     = "key.source"
	CheckKeyReachable  = "key.reachable"
	CheckKEKRotation   = "key.kek-rotation"
	CheckDEKRotation   = "key.dek-rotation"
	CheckTLSMinimum    = "tls.minimum"
	CheckTLSCert       = "tls.certificate"
	CheckSourceEncrypt = "source.encryption"
	CheckLocalCopies   = "source.local-copies"
	CheckSoftDelete    = "protect.soft-delete"
	CheckImmutability  = "protect.immutability"
	CheckMinRetention  = "protect.min-retention"
	CheckMUA           = "protect.multi-user-authorization"
	CheckRPO           = "backup.rpo"
	CheckVerified      = "backup.verified"
	CheckAudit         = "audit.verifies"
)

// CheckIDs lists every check in report order.
func CheckIDs() []string {
	return []string{CheckAtRest, CheckKeySource, CheckKeyReachable, CheckKEKRotation, CheckDEKRotation,
		CheckTLSMinimum, CheckTLSCert, CheckSourceEncrypt, CheckLocalCopies,
		CheckSoftDelete, CheckImmutability, CheckMinRetention, CheckMUA, CheckRPO, CheckVerified, CheckAudit}
}

// Controls.
const (
	pci35   = "PCI DSS v4.0 3.5"
	pci36   = "PCI DSS v4.0 3.6"
	pci37   = "PCI DSS v4.0 3.7"
	pci42   = "PCI DSS v4.0 4.2"
	pci102  = "PCI DSS v4.0 10.2"
	pci103  = "PCI DSS v4.0 10.3"
	pci104  = "PCI DSS v4.0 10.4"
	pci105  = "PCI DSS v4.0 10.5"
	pci1210 = "PCI DSS v4.0 12.10"
	iso515  = "ISO/IEC 27001:2022 A.5.15"
	iso813  = "ISO/IEC 27001:2022 A.8.13"
	iso815  = "ISO/IEC 27001:2022 A.8.15"
	iso824  = "ISO/IEC 27001:2022 A.8.24"
	gdpr32  = "UK GDPR Art. 32"
	fcaSYSC = "FCA SYSC"
	fcaOpRe = "FCA operational resilience"
)

// Controls maps each check id to the controls it supports.
func Controls(id string) []string {
	switch id {
	case CheckAtRest:
		return []string{pci35, iso824, gdpr32}
	case CheckKeySource, CheckKEKRotation, CheckDEKRotation:
		return []string{pci36, pci37, iso824, gdpr32}
	case CheckKeyReachable:
		return []string{pci36, pci37, iso824, gdpr32, fcaOpRe}
	case CheckTLSMinimum, CheckTLSCert:
		return []string{pci42, iso824, gdpr32}
	case CheckSourceEncrypt, CheckLocalCopies:
		return []string{pci35, iso824, gdpr32}
	case CheckSoftDelete, CheckImmutability, CheckMinRetention:
		return []string{iso813, pci1210, gdpr32, fcaSYSC, fcaOpRe}
	case CheckMUA:
		return []string{iso515, pci37, fcaSYSC}
	case CheckRPO, CheckVerified:
		return []string{iso813, pci1210, gdpr32, fcaSYSC, fcaOpRe}
	case CheckAudit:
		return []string{pci102, pci103, pci104, pci105, pci1210, iso815, fcaSYSC}
	}
	return nil
}

// Titles of the checks.
var titles = map[string]string{
	CheckAtRest:        "Encryption at rest is active",
	CheckKeySource:     "Key source (platform or customer-managed)",
	CheckKeyReachable:  "The key encryption key is reachable",
	CheckKEKRotation:   "Key encryption key rotated within policy",
	CheckDEKRotation:   "Data encryption key rotated within policy",
	CheckTLSMinimum:    "Server refuses TLS below 1.2",
	CheckTLSCert:       "Server certificate valid for more than 30 days",
	CheckSourceEncrypt: "Every source reports an encrypted volume",
	CheckLocalCopies:   "Local fast-restore copies are encrypted",
	CheckSoftDelete:    "Soft delete is on",
	CheckImmutability:  "Immutability is enabled or locked",
	CheckMinRetention:  "A minimum retention is set",
	CheckMUA:           "Multi-user authorization guards critical changes",
	CheckRPO:           "Every source has a recent successful backup (RPO)",
	CheckVerified:      "A recent check --read-data verified the data",
	CheckAudit:         "The audit trail verifies",
}

// Title is a check's title.
func Title(id string) string { return titles[id] }

// Policy is what the checks hold the facts against. The server sets it
// (coffer server --posture-rpo …); a zero field takes its default.
type Policy struct {
	RPO          time.Duration // a source's newest backup and source report may be this old
	KEKMaxAge    time.Duration // the platform key's age
	DEKMaxAge    time.Duration // the current data key's age
	CheckMaxAge  time.Duration // the newest check --read-data's age
	CertMinValid time.Duration // a certificate must stay valid this much longer
}

// Defaults.
const (
	DefaultRPO          = 24 * time.Hour
	DefaultKEKMaxAge    = 90 * 24 * time.Hour
	DefaultDEKMaxAge    = 365 * 24 * time.Hour
	DefaultCheckMaxAge  = 31 * 24 * time.Hour
	DefaultCertMinValid = 30 * 24 * time.Hour
)

// OrDefaults fills p's zero fields.
func (p Policy) OrDefaults() Policy {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&p.RPO, DefaultRPO)
	def(&p.KEKMaxAge, DefaultKEKMaxAge)
	def(&p.DEKMaxAge, DefaultDEKMaxAge)
	def(&p.CheckMaxAge, DefaultCheckMaxAge)
	def(&p.CertMinValid, DefaultCertMinValid)
	return p
}

// Evidence is one fact a check read: what, its value, where it was read
// and when.
type Evidence struct {
	Fact   string    `json:"fact"`
	Value  string    `json:"value"`
	Source string    `json:"source"`
	Read   time.Time `json:"read"`
}

// Check is one check's result.
type Check struct {
	ID          string     `json:"id"`
	Title       string     `json:"title"`
	Status      Status     `json:"status"`
	Summary     string     `json:"summary"`
	Evidence    []Evidence `json:"evidence"`
	Remediation string     `json:"remediation,omitempty"`
	Controls    []string   `json:"controls"`
	// HeldSince is since when the status has been what it is now, as far
	// as the kept daily records go back (server reports only).
	HeldSince *time.Time `json:"held_since,omitempty"`
}

// Facts sources, as the evidence names them.
const (
	SrcKeyring   = "vault keyring (store)"
	SrcProvider  = "key provider (probe)"
	SrcPlatform  = "platform keystore"
	SrcSettings  = "vault settings (authenticated chain)"
	SrcCatalog   = "catalog snapshots"
	SrcSnapshot  = "snapshot source report (agent)"
	SrcTLS       = "server TLS configuration"
	SrcAudit     = "server audit log"
	SrcPolicy    = "posture policy"
	SrcServerMUA = "server authorization rules"
)

// KeyFacts are what the vault's keyring and key provider say.
type KeyFacts struct {
	Algorithm  string // "AES-256-GCM"
	KeySource  string // "platform-managed" or "customer-managed"
	KEK        vault.KeyRef
	WrapAlg    string
	DEKVersion uint32
	DEKCount   int
	DEKCreated time.Time // when the current DEK was made
	// KEKCreated is when the current platform key version was generated;
	// zero when unknown (a customer key's age is its key manager's).
	KEKCreated time.Time
	// ProbeErr is the key provider's answer to a wrap/unwrap probe; ""
	// when it answered.
	ProbeErr string
	Read     time.Time
}

// TLSFacts are the server's TLS configuration as it serves.
type TLSFacts struct {
	MinVersion  uint16
	Subject     string
	NotBefore   time.Time
	NotAfter    time.Time
	Fingerprint string // SHA-256 of the leaf certificate, hex
	Read        time.Time
}

// SourceFact is a source's newest live snapshot and what it reported.
type SourceFact struct {
	Host     string
	Snapshot string // snapshot ID
	Time     time.Time
	Writer   string // who wrote it (token or principal), "" when unknown
	Facts    *vault.SourceFacts
}

// CheckRun is the newest check of the vault's data.
type CheckRun struct {
	Time     time.Time
	ReadData bool
	Subset   string // "" for all data
	Errors   int    // problems it found; -1 when not recorded
	OK       bool   // it ran to its end
	Source   string // where it was read
}

// AuditFacts are the server's audit log verification.
type AuditFacts struct {
	Entries     int64
	Checkpoints int
	Problems    []string
	Unsigned    int64
	Err         string // verification could not run
	Read        time.Time
}

// Facts are everything one vault's checks read.
type Facts struct {
	Now    time.Time
	Policy Policy
	Mode   string // "server" or "local"

	Key      KeyFacts
	Settings *vault.VaultSettings // nil when they could not be read
	SetErr   string
	SetRead  time.Time

	TLS    *TLSFacts // nil for a local vault, or a server not serving
	TLSErr string    // why a server's TLS facts are missing

	Sources     []SourceFact // newest live snapshot per host
	SourcesRead time.Time
	Checks      *CheckRun // nil: no check of the data on record
	ChecksSrc   string    // where check runs are read from

	Audit *AuditFacts // nil for a local vault
}

// SortSources orders sources by host.
func SortSources(s []SourceFact) {
	slices.SortFunc(s, func(a, b SourceFact) int { return strings.Compare(a.Host, b.Host) })
}

func ev(fact, value, src string, at time.Time) Evidence {
	return Evidence{Fact: fact, Value: value, Source: src, Read: at.UTC()}
}

// Run runs every check on f, in CheckIDs order.
func Run(f Facts) []Check {
	f.Policy = f.Policy.OrDefaults()
	out := []Check{atRest(f), keySource(f), keyReachable(f), kekRotation(f), dekRotation(f),
		tlsMinimum(f), tlsCert(f), sourceEncryption(f), localCopies(f),
		softDelete(f), immutability(f), minRetention(f), mua(f), rpo(f), verified(f), auditCheck(f)}
	for i := range out {
		out[i].Title = Title(out[i].ID)
		out[i].Controls = Controls(out[i].ID)
		if out[i].Evidence == nil {
			out[i].Evidence = []Evidence{}
		}
		if out[i].Status == Pass {
			out[i].Remediation = "" // remediation is for what is not in order
		}
	}
	return out
}

// Age formats a duration in days (or hours below two days).
func Age(d time.Duration) string {
	if d < 0 {
		return "in the future"
	}
	if d < 48*time.Hour {
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func keyEvidence(f Facts) []Evidence {
	k := f.Key
	return []Evidence{
		ev("algorithm", k.Algorithm, SrcKeyring, k.Read),
		ev("key source", k.KeySource, SrcKeyring, k.Read),
		ev("key encryption key", k.KEK.String(), SrcKeyring, k.Read),
		ev("current DEK version", fmt.Sprint(k.DEKVersion), SrcKeyring, k.Read),
	}
}

func atRest(f Facts) Check {
	c := Check{ID: CheckAtRest, Evidence: keyEvidence(f)}
	switch {
	case f.Key.Algorithm != "AES-256-GCM" || f.Key.DEKCount == 0:
		c.Status, c.Summary = Fail, "the vault's keyring shows no AES-256-GCM data key"
		c.Remediation = "Run coffer check on the vault and restore its keyring from the store (coffer vault recover); do not back up to it until its keyring is intact."
	default:
		c.Status = Pass
		c.Summary = fmt.Sprintf("every object is sealed with %s under data key v%d, wrapped by %s; Coffer has no plaintext mode", f.Key.Algorithm, f.Key.DEKVersion, f.Key.KEK)
	}
	return c
}

func keySource(f Facts) Check {
	c := Check{ID: CheckKeySource, Evidence: keyEvidence(f)[1:3]}
	switch f.Key.KeySource {
	case "customer-managed":
		c.Status, c.Summary = Pass, "customer-managed key "+f.Key.KEK.String()+": revoking it makes the vault unreadable"
	case "platform-managed":
		c.Status, c.Summary = Pass, "platform-managed key "+f.Key.KEK.String()+", rotated by Coffer"
	default:
		c.Status, c.Summary = Fail, "unknown key source"
		c.Remediation = "Inspect the vault with coffer key status and switch it to a known key (coffer key use-cmk or use-pmk)."
	}
	return c
}

func keyReachable(f Facts) Check {
	c := Check{ID: CheckKeyReachable, Evidence: []Evidence{ev("key encryption key", f.Key.KEK.String(), SrcKeyring, f.Key.Read)}}
	if f.Key.ProbeErr != "" {
		c.Evidence = append(c.Evidence, ev("probe", "failed: "+f.Key.ProbeErr, SrcProvider, f.Key.Read))
		c.Status, c.Summary = Fail, "the key encryption key cannot be used: backups and restores of this vault fail"
		c.Remediation = "Restore the vault's access to its key encryption key (grant wrap/unwrap on the customer key, or bring back the key file or HSM), then run coffer key status to confirm."
		return c
	}
	c.Evidence = append(c.Evidence, ev("probe", "wrapped and unwrapped a test value", SrcProvider, f.Key.Read))
	c.Status, c.Summary = Pass, "the key provider wrapped and unwrapped a test value"
	return c
}

func kekRotation(f Facts) Check {
	c := Check{ID: CheckKEKRotation, Evidence: []Evidence{ev("key encryption key", f.Key.KEK.String(), SrcKeyring, f.Key.Read),
		ev("policy: maximum age", Age(f.Policy.KEKMaxAge), SrcPolicy, f.Now)}}
	if f.Key.KeySource == "customer-managed" {
		c.Status = NA
		c.Summary = "a customer-managed key is rotated in the customer's key manager, which holds its age; Coffer rewraps the data keys when told (coffer key use-cmk)"
		c.Remediation = "Keep the key manager's rotation record as the evidence for this key."
		return c
	}
	if f.Key.KEKCreated.IsZero() {
		c.Status, c.Summary = Warn, "the platform key's age could not be read"
		c.Remediation = "Run coffer key status on the vault's host; rotate the platform key if its age is unknown (coffer key rotate --kek)."
		return c
	}
	age := f.Now.Sub(f.Key.KEKCreated)
	c.Evidence = append(c.Evidence, ev("key encryption key created", f.Key.KEKCreated.UTC().Format(time.RFC3339), SrcPlatform, f.Key.Read))
	if age > f.Policy.KEKMaxAge {
		c.Status, c.Summary = Fail, fmt.Sprintf("the platform key is %s old, beyond the %s policy", Age(age), Age(f.Policy.KEKMaxAge))
		c.Remediation = "Rotate the platform key: a server does so by itself when its key maintenance runs; check the server's log for key maintenance errors."
		return c
	}
	c.Status, c.Summary = Pass, fmt.Sprintf("the platform key is %s old (policy %s)", Age(age), Age(f.Policy.KEKMaxAge))
	return c
}

func dekRotation(f Facts) Check {
	c := Check{ID: CheckDEKRotation, Evidence: []Evidence{ev("current DEK version", fmt.Sprint(f.Key.DEKVersion), SrcKeyring, f.Key.Read),
		ev("current DEK created", f.Key.DEKCreated.UTC().Format(time.RFC3339), SrcKeyring, f.Key.Read),
		ev("policy: maximum age", Age(f.Policy.DEKMaxAge), SrcPolicy, f.Now)}}
	age := f.Now.Sub(f.Key.DEKCreated)
	if f.Key.DEKCreated.IsZero() || age > f.Policy.DEKMaxAge {
		c.Status, c.Summary = Warn, fmt.Sprintf("the current data key is %s old, beyond the %s policy", Age(age), Age(f.Policy.DEKMaxAge))
		c.Remediation = "Rotate the data key: coffer key rotate (new data is sealed under the new key; nothing is re-encrypted)."
		return c
	}
	c.Status, c.Summary = Pass, fmt.Sprintf("the current data key is %s old (policy %s)", Age(age), Age(f.Policy.DEKMaxAge))
	return c
}

func tlsMinimum(f Facts) Check {
	c := Check{ID: CheckTLSMinimum}
	if f.TLS == nil {
		return noTLS(c, f, "no network transport")
	}
	c.Evidence = []Evidence{ev("minimum TLS version", tls.VersionName(f.TLS.MinVersion), SrcTLS, f.TLS.Read)}
	if f.TLS.MinVersion < tls.VersionTLS12 {
		c.Status, c.Summary = Fail, "the server accepts "+tls.VersionName(f.TLS.MinVersion)
		c.Remediation = "Start the server with --tls-min 1.2 or 1.3."
		return c
	}
	c.Status, c.Summary = Pass, "the server refuses anything below "+tls.VersionName(f.TLS.MinVersion)+"; it has no plaintext mode"
	return c
}

// noTLS is a TLS check without TLS facts: n/a for a local vault, a
// failure for a server.
func noTLS(c Check, f Facts, what string) Check {
	if f.Mode != "server" {
		c.Status, c.Summary = NA, "a local vault is opened in-process: "+what
		return c
	}
	c.Evidence = []Evidence{ev("TLS configuration", "not read: "+f.TLSErr, SrcTLS, f.Now)}
	c.Status, c.Summary = Fail, "the server's TLS configuration could not be read"
	c.Remediation = "Serve the vault with coffer server, which serves HTTPS only."
	return c
}

func tlsCert(f Facts) Check {
	c := Check{ID: CheckTLSCert}
	if f.TLS == nil {
		return noTLS(c, f, "no certificate")
	}
	t := f.TLS
	c.Evidence = []Evidence{ev("subject", t.Subject, SrcTLS, t.Read), ev("valid from", t.NotBefore.UTC().Format(time.RFC3339), SrcTLS, t.Read),
		ev("valid until", t.NotAfter.UTC().Format(time.RFC3339), SrcTLS, t.Read), ev("SHA-256 fingerprint", t.Fingerprint, SrcTLS, t.Read)}
	left := t.NotAfter.Sub(f.Now)
	switch {
	case f.Now.Before(t.NotBefore) || left <= 0:
		c.Status, c.Summary = Fail, "the server's certificate is not valid now"
		c.Remediation = "Install a valid certificate (coffer server --tls-cert/--tls-key) and restart the server."
	case left <= f.Policy.CertMinValid:
		c.Status, c.Summary = Warn, fmt.Sprintf("the certificate expires in %s, within %s", Age(left), Age(f.Policy.CertMinValid))
		c.Remediation = "Renew the server's certificate before it expires and restart the server."
	default:
		c.Status, c.Summary = Pass, fmt.Sprintf("the certificate is valid for %s more", Age(left))
	}
	return c
}

// sourceEvidence is what each source reported, and when.
func sourceEvidence(f Facts, s SourceFact) Evidence {
	by := ""
	if s.Writer != "" {
		by = ", written by " + s.Writer
	}
	return ev("source "+s.Host, fmt.Sprintf("newest snapshot %s at %s%s", s.Snapshot, s.Time.UTC().Format(time.RFC3339), by), SrcCatalog, f.SourcesRead)
}

func sourceEncryption(f Facts) Check {
	c := Check{ID: CheckSourceEncrypt}
	if len(f.Sources) == 0 {
		c.Status, c.Summary = NA, "no source has backed up into this vault"
		return c
	}
	var bad, unknown, silent, stale []string
	for _, s := range f.Sources {
		c.Evidence = append(c.Evidence, sourceEvidence(f, s))
		if s.Facts == nil || len(s.Facts.Volumes) == 0 {
			silent = append(silent, s.Host)
			c.Evidence = append(c.Evidence, ev("source "+s.Host+" volumes", "not reported", SrcSnapshot, s.Time))
			continue
		}
		if f.Now.Sub(s.Time) > f.Policy.RPO {
			stale = append(stale, s.Host)
		}
		for _, v := range s.Facts.Volumes {
			val := v.Encryption
			if v.Method != "" {
				val += " (" + v.Method + ")"
			}
			val += fmt.Sprintf(" — path %s on %s (%s, %s)", v.Path, v.Mount, v.Device, v.FSType)
			if v.Detail != "" {
				val += ": " + v.Detail
			}
			c.Evidence = append(c.Evidence, ev("source "+s.Host+" volume", val, SrcSnapshot, s.Time))
			switch v.Encryption {
			case vault.VolumeEncrypted:
			case vault.VolumeUnencrypted:
				bad = appendOnce(bad, s.Host)
			default:
				unknown = appendOnce(unknown, s.Host)
			}
		}
	}
	var parts []string
	if len(bad) > 0 {
		parts = append(parts, "unencrypted volume on "+strings.Join(bad, ", "))
	}
	if len(unknown) > 0 {
		parts = append(parts, "encryption unknown on "+strings.Join(unknown, ", "))
	}
	if len(silent) > 0 {
		parts = append(parts, "not reported by "+strings.Join(silent, ", "))
	}
	if len(stale) > 0 {
		parts = append(parts, fmt.Sprintf("last reported more than %s ago by %s", Age(f.Policy.RPO), strings.Join(stale, ", ")))
	}
	switch {
	case len(bad) > 0:
		c.Status = Fail
	case len(parts) > 0:
		c.Status = Warn
	default:
		c.Status, c.Summary = Pass, fmt.Sprintf("all %d sources report encrypted volumes, within the %s RPO", len(f.Sources), Age(f.Policy.RPO))
		return c
	}
	c.Summary = strings.Join(parts, "; ")
	c.Remediation = "Encrypt the source volumes flagged (LUKS/dm-crypt, fscrypt, BitLocker, FileVault); a source that did not report, or reported unknown, needs an agent that reports its volumes (coffer agent status shows what it finds) and a fresh backup."
	return c
}

func appendOnce(s []string, v string) []string {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

func localCopies(f Facts) Check {
	c := Check{ID: CheckLocalCopies}
	var plain, silent, kept []string
	for _, s := range f.Sources {
		switch {
		case s.Facts == nil:
			silent = append(silent, s.Host)
			c.Evidence = append(c.Evidence, ev("source "+s.Host+" local copies", "not reported", SrcSnapshot, s.Time))
		case s.Facts.LocalCopies == nil:
			c.Evidence = append(c.Evidence, ev("source "+s.Host+" local copies", "none kept", SrcSnapshot, s.Time))
		default:
			lc := s.Facts.LocalCopies
			kept = append(kept, s.Host)
			val := fmt.Sprintf("keeps %d, holds %d, encrypted %v", lc.Keep, lc.Held, lc.Encrypted)
			if lc.Cipher != "" {
				val += " (" + lc.Cipher + ")"
			}
			c.Evidence = append(c.Evidence, ev("source "+s.Host+" local copies", val, SrcSnapshot, s.Time))
			if !lc.Encrypted {
				plain = append(plain, s.Host)
			}
		}
	}
	switch {
	case len(plain) > 0:
		c.Status, c.Summary = Fail, "unencrypted local copies on "+strings.Join(plain, ", ")
		c.Remediation = "Upgrade the agents flagged: Coffer's local copies are sealed under a key the vault wraps; delete unencrypted copies."
	case len(silent) > 0:
		c.Status, c.Summary = Warn, "not reported by "+strings.Join(silent, ", ")
		c.Remediation = "Run an agent that reports its local copies (coffer backup sends the report with each snapshot)."
	case len(kept) > 0:
		c.Status, c.Summary = Pass, "local copies on "+strings.Join(kept, ", ")+" are encrypted"
	default:
		c.Status, c.Summary = NA, "no source keeps local copies"
	}
	return c
}

func settingsEvidence(f Facts) (*vault.VaultSettings, []Evidence, *Check) {
	if f.Settings == nil {
		return nil, []Evidence{ev("settings", "could not be read: "+f.SetErr, SrcSettings, f.SetRead)}, &Check{Status: Fail,
			Summary:     "the vault's deletion-protection settings could not be read",
			Remediation: "Make the vault's key reachable and run coffer vault show; settings that do not verify mean the catalog was edited: run coffer check."}
	}
	return f.Settings, nil, nil
}

func softDelete(f Facts) Check {
	c := Check{ID: CheckSoftDelete}
	s, e, bad := settingsEvidence(f)
	if bad != nil {
		bad.ID, bad.Evidence = c.ID, e
		return *bad
	}
	c.Evidence = []Evidence{ev("soft delete", string(s.SoftDelete), SrcSettings, f.SetRead), ev("soft-delete days", fmt.Sprint(s.SoftDeleteDays), SrcSettings, f.SetRead)}
	switch s.SoftDelete {
	case vault.SoftDeleteAlwaysOn:
		c.Status, c.Summary = Pass, fmt.Sprintf("always on (irreversible), %d days", s.SoftDeleteDays)
	case vault.SoftDeleteOn:
		c.Status, c.Summary = Pass, fmt.Sprintf("on, %d days; not always-on, so it can be turned off with approval", s.SoftDeleteDays)
	default:
		c.Status, c.Summary = Fail, "soft delete is off: forgotten snapshots can be pruned at once"
		c.Remediation = "Turn soft delete on: coffer protect --soft-delete on (or always-on, which cannot be undone)."
	}
	return c
}

func immutability(f Facts) Check {
	c := Check{ID: CheckImmutability}
	s, e, bad := settingsEvidence(f)
	if bad != nil {
		bad.ID, bad.Evidence = c.ID, e
		return *bad
	}
	c.Evidence = []Evidence{ev("immutability", string(s.Immutability), SrcSettings, f.SetRead)}
	switch s.Immutability {
	case vault.ImmutabilityLocked:
		c.Status, c.Summary = Pass, "locked: no snapshot can be deleted before its retention, and the lock cannot be lifted"
	case vault.ImmutabilityEnabled:
		c.Status, c.Summary = Pass, "enabled (not locked: it can still be disabled with approval)"
	default:
		c.Status, c.Summary = Warn, "immutability is disabled"
		c.Remediation = "Enable immutability (coffer protect --immutability enabled), and lock it once the retention is settled."
	}
	return c
}

func minRetention(f Facts) Check {
	c := Check{ID: CheckMinRetention}
	s, e, bad := settingsEvidence(f)
	if bad != nil {
		bad.ID, bad.Evidence = c.ID, e
		return *bad
	}
	pol := s.Policy
	if pol == "" {
		pol = "none"
	}
	c.Evidence = []Evidence{ev("minimum retention", Age(s.MinRetention), SrcSettings, f.SetRead), ev("retention policy", pol, SrcSettings, f.SetRead)}
	if s.MinRetention <= 0 {
		c.Evidence[0].Value = "none"
		c.Status, c.Summary = Warn, "no minimum retention: a snapshot may be forgotten as soon as it is made"
		c.Remediation = "Set a minimum retention: coffer protect --min-retention 30d."
		return c
	}
	c.Status, c.Summary = Pass, "no snapshot may be forgotten before it is "+Age(s.MinRetention)+" old"
	return c
}

func mua(f Facts) Check {
	c := Check{ID: CheckMUA}
	if f.Mode == "server" {
		c.Evidence = []Evidence{ev("critical changes", "need a security approver other than the requester", SrcServerMUA, f.Now)}
		c.Status, c.Summary = Pass, "critical changes (weakening protection, key switches, vault deletion) wait for a security approver; an owner cannot approve its own"
		return c
	}
	s, e, bad := settingsEvidence(f)
	if bad != nil {
		bad.ID, bad.Evidence = c.ID, e
		return *bad
	}
	c.Evidence = []Evidence{ev("single-user", fmt.Sprint(s.SingleUser), SrcSettings, f.SetRead)}
	c.Status = Warn
	c.Summary = "a local vault has one user, who makes critical changes alone"
	if s.SingleUser {
		c.Summary = "a single-user local vault: its one user makes critical changes with --confirm"
	}
	c.Remediation = "Serve the vault from a coffer server, where critical changes need a security approver."
	return c
}

func rpo(f Facts) Check {
	c := Check{ID: CheckRPO, Evidence: []Evidence{ev("policy: recovery point objective", Age(f.Policy.RPO), SrcPolicy, f.Now)}}
	if len(f.Sources) == 0 {
		c.Status, c.Summary = Fail, "the vault holds no snapshot"
		c.Remediation = "Back up each source into the vault (coffer backup), on a schedule within the RPO (coffer schedule)."
		return c
	}
	var late []string
	for _, s := range f.Sources {
		c.Evidence = append(c.Evidence, sourceEvidence(f, s))
		if f.Now.Sub(s.Time) > f.Policy.RPO {
			late = append(late, fmt.Sprintf("%s (%s ago)", s.Host, Age(f.Now.Sub(s.Time))))
		}
	}
	if len(late) > 0 {
		c.Status, c.Summary = Fail, "no backup within the RPO from "+strings.Join(late, ", ")
		c.Remediation = "Find why the sources flagged stopped backing up (coffer agent status on each), run a backup, and keep a schedule within the RPO."
		return c
	}
	c.Status, c.Summary = Pass, fmt.Sprintf("all %d sources backed up within %s", len(f.Sources), Age(f.Policy.RPO))
	return c
}

func verified(f Facts) Check {
	c := Check{ID: CheckVerified, Evidence: []Evidence{ev("policy: maximum age", Age(f.Policy.CheckMaxAge), SrcPolicy, f.Now)}}
	r := f.Checks
	if r == nil {
		c.Evidence = append(c.Evidence, ev("newest check --read-data", "none on record", f.ChecksSrc, f.Now))
		c.Status, c.Summary = Warn, "no check --read-data on record"
		c.Remediation = "Run coffer check --read-data (or --read-data-subset on a large vault) on a schedule within the policy."
		return c
	}
	val := r.Time.UTC().Format(time.RFC3339)
	if r.Subset != "" {
		val += ", subset " + r.Subset
	}
	if r.Errors >= 0 {
		val += fmt.Sprintf(", %d errors", r.Errors)
	}
	c.Evidence = append(c.Evidence, ev("newest check --read-data", val, r.Source, f.Now))
	switch {
	case !r.OK || r.Errors > 0:
		c.Status, c.Summary = Fail, "the newest check --read-data found problems or did not finish"
		c.Remediation = "Run coffer check --read-data and repair what it reports (coffer repair)."
	case f.Now.Sub(r.Time) > f.Policy.CheckMaxAge:
		c.Status, c.Summary = Warn, "the newest check --read-data is "+Age(f.Now.Sub(r.Time))+" old"
		c.Remediation = "Run coffer check --read-data on a schedule within the policy."
	default:
		c.Status, c.Summary = Pass, "the data was read back and verified "+Age(f.Now.Sub(r.Time))+" ago"
	}
	return c
}

func auditCheck(f Facts) Check {
	c := Check{ID: CheckAudit}
	a := f.Audit
	if a == nil {
		c.Status, c.Summary = NA, "a local vault has no server audit log; its key and vault events are kept in its catalog (coffer vault log)"
		return c
	}
	c.Evidence = []Evidence{ev("entries", fmt.Sprint(a.Entries), SrcAudit, a.Read), ev("signed checkpoints", fmt.Sprint(a.Checkpoints), SrcAudit, a.Read)}
	switch {
	case a.Err != "":
		c.Evidence = append(c.Evidence, ev("verification", "could not run: "+a.Err, SrcAudit, a.Read))
		c.Status, c.Summary = Fail, "the audit log could not be verified"
	case len(a.Problems) > 0:
		for _, p := range a.Problems {
			c.Evidence = append(c.Evidence, ev("problem", p, SrcAudit, a.Read))
		}
		c.Status, c.Summary = Fail, fmt.Sprintf("the audit log does not verify: %d problems", len(a.Problems))
	default:
		c.Status, c.Summary = Pass, "every entry's hash, the Merkle tree and every signed checkpoint verify"
		return c
	}
	c.Remediation = "Run coffer audit verify --data on the server and follow docs/audit.md; treat an unexplained failure as an incident (PCI DSS 12.10)."
	return c
}
