package posture

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// Report is the posture of one or more vaults (docs/posture.md).
type Report struct {
	Schema    string    `json:"schema"`
	Generated time.Time `json:"generated"`
	Mode      string    `json:"mode"` // "server" or "local"
	// Producer says who computed it: the server (its TLS certificate's
	// fingerprint), or the local CLI.
	Producer string       `json:"producer"`
	Policy   PolicyReport `json:"policy"`
	// HistorySince is where the --since window starts; zero when the
	// report has no history (a local vault keeps none).
	HistorySince *time.Time `json:"history_since,omitempty"`
	Vaults       []Vault    `json:"vaults"`
	// Signed reports whether the envelope's signature covers the report;
	// UnsignedReason says why not.
	Signed         bool   `json:"signed"`
	UnsignedReason string `json:"unsigned_reason,omitempty"`
}

// PolicyReport is the policy in force, in seconds.
type PolicyReport struct {
	RPOSeconds          int64 `json:"rpo_seconds"`
	KEKMaxAgeSeconds    int64 `json:"kek_max_age_seconds"`
	DEKMaxAgeSeconds    int64 `json:"dek_max_age_seconds"`
	CheckMaxAgeSeconds  int64 `json:"check_max_age_seconds"`
	CertMinValidSeconds int64 `json:"cert_min_valid_seconds"`
}

// ReportPolicy is p (defaults filled) as the report shows it.
func ReportPolicy(p Policy) PolicyReport {
	p = p.OrDefaults()
	return PolicyReport{RPOSeconds: int64(p.RPO / time.Second), KEKMaxAgeSeconds: int64(p.KEKMaxAge / time.Second),
		DEKMaxAgeSeconds: int64(p.DEKMaxAge / time.Second), CheckMaxAgeSeconds: int64(p.CheckMaxAge / time.Second),
		CertMinValidSeconds: int64(p.CertMinValid / time.Second)}
}

// Vault is one vault's section.
type Vault struct {
	Name   string  `json:"name"`
	ID     string  `json:"id"`
	Status Status  `json:"status"` // the worst check status
	Checks []Check `json:"checks"`
	// Controls says, per control, whether every check supporting it
	// passes and since when (as far as the kept records go back).
	Controls []ControlState `json:"controls"`
	// Changes are the check status changes within the history window,
	// oldest first; Records how many daily records it holds.
	Changes []Change `json:"changes"`
	Records int      `json:"records"`
}

// ControlState is one control's state in a vault.
type ControlState struct {
	Control string     `json:"control"`
	Status  Status     `json:"status"`
	Since   *time.Time `json:"held_since,omitempty"` // for Pass: since when it has held
}

// Change is one check's status change between two records.
type Change struct {
	Check string    `json:"check"`
	At    time.Time `json:"at"`
	From  Status    `json:"from"`
	To    Status    `json:"to"`
}

// Record is a vault's posture at one time: check id → status. The
// server keeps one a day per vault (another when a status changes that
// day) in its audit log (docs/posture.md).
type Record struct {
	Vault  string            `json:"vault"`
	Time   time.Time         `json:"time"`
	Status map[string]Status `json:"status"`
}

// RecordOf is the record of checks at t.
func RecordOf(vaultName string, t time.Time, checks []Check) Record {
	r := Record{Vault: vaultName, Time: t.UTC(), Status: map[string]Status{}}
	for _, c := range checks {
		r.Status[c.ID] = c.Status
	}
	return r
}

// Encode is r's canonical encoding (sorted keys, UTC time).
func (r Record) Encode() []byte {
	r.Time = r.Time.UTC()
	b, _ := json.Marshal(r)
	return b
}

// Hash is the SHA-256 of r's encoding, hex.
func (r Record) Hash() string {
	h := sha256.Sum256(r.Encode())
	return hex.EncodeToString(h[:])
}

// ParseRecord parses an encoded record and checks it against its hash.
func ParseRecord(b []byte, hash string) (Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("posture record: %w", err)
	}
	if r.Hash() != hash {
		return Record{}, errors.New("posture record does not match its hash")
	}
	return r, nil
}

// SameStatus reports whether a and b hold the same statuses.
func SameStatus(a, b Record) bool {
	if len(a.Status) != len(b.Status) {
		return false
	}
	for k, v := range a.Status {
		if b.Status[k] != v {
			return false
		}
	}
	return true
}

// NewVault builds a vault's section from its checks and its kept records
// (any order; the current checks count as the newest record at now).
func NewVault(name, id string, checks []Check, records []Record, now time.Time) Vault {
	v := Vault{Name: name, ID: id, Checks: checks, Changes: []Change{}, Records: len(records)}
	recs := slices.Clone(records)
	recs = append(recs, RecordOf(name, now, checks))
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].Time.Before(recs[j].Time) })
	for i := 1; i < len(recs); i++ {
		for _, id := range CheckIDs() {
			from, to := recs[i-1].Status[id], recs[i].Status[id]
			if from != to && from != "" && to != "" {
				v.Changes = append(v.Changes, Change{Check: id, At: recs[i].Time, From: from, To: to})
			}
		}
	}
	for i := range v.Checks {
		c := &v.Checks[i]
		since := recs[len(recs)-1].Time
		for j := len(recs) - 1; j >= 0 && recs[j].Status[c.ID] == c.Status; j-- {
			since = recs[j].Time
		}
		if len(records) > 0 {
			c.HeldSince = &since
		}
		if c.Status.rank() > v.Status.rank() {
			v.Status = c.Status
		}
	}
	// A control holds when every check that supports it passes (n/a
	// ones aside); it has held since the latest of their HeldSince.
	byControl := map[string]*ControlState{}
	var order []string
	for _, c := range v.Checks {
		for _, ctl := range c.Controls {
			cs, ok := byControl[ctl]
			if !ok {
				cs = &ControlState{Control: ctl, Status: NA}
				byControl[ctl] = cs
				order = append(order, ctl)
			}
			switch {
			case c.Status == NA:
			case c.Status.rank() > cs.Status.rank():
				cs.Status, cs.Since = c.Status, nil
			}
			if c.Status == Pass && cs.Status == Pass && c.HeldSince != nil && (cs.Since == nil || c.HeldSince.After(*cs.Since)) {
				t := *c.HeldSince
				cs.Since = &t
			}
		}
	}
	sort.Strings(order)
	for _, ctl := range order {
		cs := byControl[ctl]
		if cs.Status != Pass {
			cs.Since = nil
		}
		v.Controls = append(v.Controls, *cs)
	}
	return v
}

// Envelope is the JSON document: the report and, for a server's report,
// its signature.
type Envelope struct {
	Report    json.RawMessage `json:"report"`
	Signature *Signature      `json:"signature"`
}

// Signature is an Ed25519 signature by the server's audit key over
// SignedPrefix followed by the canonical form of the report.
type Signature struct {
	Alg     string `json:"alg"`      // "ed25519"
	KeyName string `json:"key_name"` // the audit key's name, "coffer-audit"
	KeyHash string `json:"key_hash"` // the verifier key's hash, 8 hex digits
	Sig     string `json:"sig"`      // base64
}

// SignedPrefix separates a report's signature from every other use of
// the audit key (checkpoint notes sign tree texts).
const SignedPrefix = "coffer posture report v1\n"

// MaxReport bounds a report a verifier reads.
const MaxReport = 64 << 20

// Canonical is the canonical form of a JSON value: decoded (numbers as
// written) and encoded again with sorted object keys and no spaces. Any
// change to a field, added or removed fields included, changes it.
func Canonical(raw []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("report: data after the JSON value")
	}
	return json.Marshal(v)
}

// Seal encodes r as an envelope, signed by signer when it is not nil.
func Seal(r *Report, signer note.Signer) ([]byte, error) {
	r.Schema = Schema
	r.Signed = signer != nil
	if r.Signed {
		r.UnsignedReason = ""
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	canon, err := Canonical(b)
	if err != nil {
		return nil, err
	}
	env := Envelope{Report: canon}
	if signer != nil {
		sig, err := signer.Sign(append([]byte(SignedPrefix), canon...))
		if err != nil {
			return nil, fmt.Errorf("sign report: %w", err)
		}
		env.Signature = &Signature{Alg: "ed25519", KeyName: signer.Name(), KeyHash: fmt.Sprintf("%08x", signer.KeyHash()), Sig: base64.StdEncoding.EncodeToString(sig)}
	}
	return json.MarshalIndent(env, "", "  ")
}

// Open parses an envelope without checking its signature (for showing a
// report that the caller fetched over an authenticated connection).
func Open(b []byte) (*Report, *Signature, error) {
	if len(b) > MaxReport {
		return nil, nil, fmt.Errorf("report larger than %d bytes", MaxReport)
	}
	var env Envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, nil, fmt.Errorf("not a posture report: %w", err)
	}
	if len(env.Report) == 0 {
		return nil, nil, errors.New("not a posture report: no report field")
	}
	canon, err := Canonical(env.Report)
	if err != nil {
		return nil, nil, err
	}
	var r Report
	if err := json.Unmarshal(canon, &r); err != nil {
		return nil, nil, fmt.Errorf("not a posture report: %w", err)
	}
	if r.Schema != Schema {
		return nil, nil, fmt.Errorf("report schema %q: this coffer reads %s", r.Schema, Schema)
	}
	return &r, env.Signature, nil
}

// Verify checks an envelope's signature with the verifier key vkey (the
// server's audit key, "coffer-audit+hash+key") and returns the report it
// covers. An unsigned report, a signature by another key, or any change
// to the report fails.
func Verify(b []byte, vkey string) (*Report, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("verifier key: %w", err)
	}
	if len(b) > MaxReport {
		return nil, fmt.Errorf("report larger than %d bytes", MaxReport)
	}
	var env Envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, fmt.Errorf("not a posture report: %w", err)
	}
	if env.Signature == nil {
		return nil, errors.New("the report is not signed: only a server's report is (a local vault's report says why it is not)")
	}
	s := env.Signature
	if s.Alg != "ed25519" || s.KeyName != v.Name() || s.KeyHash != fmt.Sprintf("%08x", v.KeyHash()) {
		return nil, fmt.Errorf("the report is signed by %s+%s, not by the verifier key %s+%08x", s.KeyName, s.KeyHash, v.Name(), v.KeyHash())
	}
	sig, err := base64.StdEncoding.DecodeString(s.Sig)
	if err != nil {
		return nil, errors.New("the report's signature is malformed")
	}
	canon, err := Canonical(env.Report)
	if err != nil {
		return nil, err
	}
	if !v.Verify(append([]byte(SignedPrefix), canon...), sig) {
		return nil, errors.New("the report's signature does not verify: it was altered, or not signed by this key")
	}
	var r Report
	if err := json.Unmarshal(canon, &r); err != nil {
		return nil, fmt.Errorf("not a posture report: %w", err)
	}
	if r.Schema != Schema || !r.Signed {
		return nil, fmt.Errorf("report schema %q (signed %v): this coffer reads signed %s reports", r.Schema, r.Signed, Schema)
	}
	return &r, nil
}

// Worst is the worst status among the report's vaults.
func (r *Report) Worst() Status {
	w := NA
	for _, v := range r.Vaults {
		if v.Status.rank() > w.rank() {
			w = v.Status
		}
	}
	return w
}

// Total counts the checks of every vault whose status is s ("pass",
// "warn", "fail" or "n/a").
func (r *Report) Total(s string) int {
	n := 0
	for _, v := range r.Vaults {
		n += v.Counts()[Status(s)]
	}
	return n
}

// Counts counts the checks of a vault by status.
func (v Vault) Counts() map[Status]int {
	m := map[Status]int{}
	for _, c := range v.Checks {
		m[c.Status]++
	}
	return m
}

// heldFor is Age of the time since t, for "held since".
func heldFor(now time.Time, t *time.Time) string {
	if t == nil {
		return ""
	}
	return "held " + Age(now.Sub(*t)) + " (since " + t.UTC().Format("2006-01-02") + ")"
}
