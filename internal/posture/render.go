package posture

import (
	"fmt"
	"html/template"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// Scope is the report's scope statement: the three encryption layers,
// documented separately, and what the report does not attest.
var Scope = []ScopeItem{
	{Layer: "At rest, in the vault", Text: "Every object the vault stores (packs, trees, snapshots, key records) is sealed with AES-256-GCM under a versioned data encryption key (DEK); the DEKs are wrapped by a key encryption key (KEK): the platform key, or a customer-managed key in the customer's key manager. Checks: " +
		strings.Join([]string{CheckAtRest, CheckKeySource, CheckKeyReachable, CheckKEKRotation, CheckDEKRotation}, ", ") + "."},
	{Layer: "In transit, by TLS", Text: "Agents reach a vault server over HTTPS only: the server has no plaintext mode, refuses TLS below its minimum and presents the certificate shown. A local vault is opened in-process and has no transport. Checks: " +
		CheckTLSMinimum + ", " + CheckTLSCert + "."},
	{Layer: "At the source, by disk encryption", Text: "Whether each source machine's disk is encrypted (LUKS/dm-crypt, fscrypt, eCryptfs, BitLocker, FileVault) is the agent's own report, sent with each snapshot and shown with the host, the snapshot and the time it came with; the vault does not verify it. The agent's local fast-restore copies are sealed under a key the vault wraps. Checks: " +
		CheckSourceEncrypt + ", " + CheckLocalCopies + "."},
	{Layer: "Not covered", Text: "The report states the configuration and state read when it was generated (each fact with its source and time), and, for a server, the daily records it kept. It does not attest the security of the machines themselves, the key manager's own controls, or anything the agent does not report."},
}

// ScopeItem is one paragraph of the scope statement.
type ScopeItem struct{ Layer, Text string }

func statusWord(s Status) string { return strings.ToUpper(string(s)) }

func signedLine(r *Report) string {
	if r.Signed {
		return "signed by the server's audit key (verify offline: coffer audit verify --report FILE)"
	}
	return "UNSIGNED: " + r.UnsignedReason
}

// WriteText writes r for a terminal. esc must make a value safe to print
// inside a line (the CLI passes its terminal escaper): host names, paths
// and every other value read from the vault go through it.
func WriteText(w io.Writer, r *Report, esc func(string) string) error {
	b := &strings.Builder{}
	fmt.Fprintf(b, "Coffer posture report (%s mode), generated %s\n", r.Mode, r.Generated.UTC().Format(time.RFC3339))
	fmt.Fprintf(b, "Producer: %s\n", esc(r.Producer))
	fmt.Fprintf(b, "Signature: %s\n", esc(signedLine(r)))
	for _, v := range r.Vaults {
		n := v.Counts()
		fmt.Fprintf(b, "\nVault %s (%s): %s — %d pass, %d warn, %d fail, %d n/a\n", esc(v.Name), esc(v.ID), statusWord(v.Status), n[Pass], n[Warn], n[Fail], n[NA])
		for _, c := range v.Checks {
			fmt.Fprintf(b, "  [%-4s] %-34s %s\n", statusWord(c.Status), esc(c.ID), esc(c.Summary))
			if held := heldFor(r.Generated, c.HeldSince); held != "" {
				fmt.Fprintf(b, "         %s\n", held)
			}
			for _, e := range c.Evidence {
				fmt.Fprintf(b, "         · %s: %s  [%s, %s]\n", esc(e.Fact), esc(e.Value), esc(e.Source), e.Read.UTC().Format(time.RFC3339))
			}
			if c.Remediation != "" {
				fmt.Fprintf(b, "         → %s\n", esc(c.Remediation))
			}
		}
		if r.HistorySince != nil {
			fmt.Fprintf(b, "  Controls since %s (%d daily records):\n", r.HistorySince.UTC().Format("2006-01-02"), v.Records)
			for _, cs := range v.Controls {
				fmt.Fprintf(b, "    %-30s %-4s %s\n", esc(cs.Control), statusWord(cs.Status), heldFor(r.Generated, cs.Since))
			}
			if len(v.Changes) == 0 {
				fmt.Fprintf(b, "  No check changed state since %s.\n", r.HistorySince.UTC().Format("2006-01-02"))
			}
			for _, ch := range v.Changes {
				fmt.Fprintf(b, "  %s  %-34s %s → %s\n", ch.At.UTC().Format(time.RFC3339), esc(ch.Check), statusWord(ch.From), statusWord(ch.To))
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// visible replaces the runes that would hide or reorder text (controls,
// bidi overrides) with a visible escape, for HTML and Markdown.
func visible(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < 0x20 || r == 0x7f || r >= 0x80 && r <= 0x9f,
			r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c:
			if r < 0x80 {
				fmt.Fprintf(&b, `\x%02x`, r)
			} else {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// md escapes s for a Markdown paragraph or table cell: every character
// Markdown or inline HTML could act on is escaped, so a value can neither
// format, link, close a cell nor inject HTML.
func md(s string) string {
	s = visible(s)
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '&':
			b.WriteString("&amp;")
		case '\\', '`', '*', '_', '{', '}', '[', ']', '(', ')', '!', '|', '~', '.', ':':
			// '.' and ':' too: GFM turns www.x and http://x into links.
			// A value never starts a line (line breaks are escaped), so
			// the line-start marks (#, -, +, 1.) need nothing.
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// WriteMarkdown writes r as Markdown.
func WriteMarkdown(w io.Writer, r *Report) error {
	b := &strings.Builder{}
	fmt.Fprintf(b, "# Coffer posture report\n\n")
	fmt.Fprintf(b, "- Generated: %s\n- Mode: %s\n- Producer: %s\n- Signature: %s\n\n", md(r.Generated.UTC().Format(time.RFC3339)), md(r.Mode), md(r.Producer), md(signedLine(r)))
	fmt.Fprintf(b, "## Summary\n\n| vault | status | pass | warn | fail | n/a |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, v := range r.Vaults {
		n := v.Counts()
		fmt.Fprintf(b, "| %s | %s | %d | %d | %d | %d |\n", md(v.Name), statusWord(v.Status), n[Pass], n[Warn], n[Fail], n[NA])
	}
	fmt.Fprintf(b, "\n## Scope\n\n")
	for _, s := range Scope {
		fmt.Fprintf(b, "- **%s.** %s\n", md(s.Layer), md(s.Text))
	}
	for _, v := range r.Vaults {
		fmt.Fprintf(b, "\n## Vault %s\n\nID %s, status **%s**.\n\n", md(v.Name), md(v.ID), statusWord(v.Status))
		fmt.Fprintf(b, "| check | status | summary | remediation | controls |\n| --- | --- | --- | --- | --- |\n")
		for _, c := range v.Checks {
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", md(c.ID), statusWord(c.Status), md(c.Summary), md(c.Remediation), md(strings.Join(c.Controls, "; ")))
		}
		fmt.Fprintf(b, "\n### Evidence\n\n| check | fact | value | source | read |\n| --- | --- | --- | --- | --- |\n")
		for _, c := range v.Checks {
			for _, e := range c.Evidence {
				fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", md(c.ID), md(e.Fact), md(e.Value), md(e.Source), md(e.Read.UTC().Format(time.RFC3339)))
			}
		}
		if r.HistorySince != nil {
			fmt.Fprintf(b, "\n### Over time (since %s, %d daily records)\n\n| control | status | held |\n| --- | --- | --- |\n", md(r.HistorySince.UTC().Format("2006-01-02")), v.Records)
			for _, cs := range v.Controls {
				fmt.Fprintf(b, "| %s | %s | %s |\n", md(cs.Control), statusWord(cs.Status), md(heldFor(r.Generated, cs.Since)))
			}
			fmt.Fprintf(b, "\n| time | check | from | to |\n| --- | --- | --- | --- |\n")
			for _, ch := range v.Changes {
				fmt.Fprintf(b, "| %s | %s | %s | %s |\n", md(ch.At.UTC().Format(time.RFC3339)), md(ch.Check), statusWord(ch.From), statusWord(ch.To))
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

var htmlTmpl = template.Must(template.New("report").Funcs(template.FuncMap{
	"v":      visible,
	"up":     statusWord,
	"time":   func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"date":   func(t *time.Time) string { return t.UTC().Format("2006-01-02") },
	"held":   heldFor,
	"join":   strings.Join,
	"cls":    func(s Status) string { return map[Status]string{Pass: "pass", Warn: "warn", Fail: "fail"}[s] + "" },
	"n":      func(v Vault, s string) int { return v.Counts()[Status(s)] },
	"signed": signedLine,
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>Coffer posture report</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#111;max-width:72em}
table{border-collapse:collapse;width:100%;margin:.5em 0 1.5em}
th,td{border:1px solid #bbb;padding:.3em .5em;text-align:left;vertical-align:top;word-break:break-word}
th{background:#eee}
.pass{background:#d8f5d8}.warn{background:#fff1c2}.fail{background:#ffd6d6}.na{background:#eee}
.badge{font-weight:bold;padding:0 .4em}
.small{font-size:.85em;color:#444}
</style>
</head>
<body>
<h1>Coffer posture report</h1>
<p class="small">Generated {{time .Generated}} · {{v .Mode}} mode · producer {{v .Producer}}<br>Signature: {{v (signed .R)}}</p>
<section id="summary">
<h2>Summary</h2>
<table>
<tr><th>vault</th><th>status</th><th>pass</th><th>warn</th><th>fail</th><th>n/a</th></tr>
{{range .Vaults}}<tr><td><a href="#vault-{{v .ID}}">{{v .Name}}</a></td><td class="{{cls .Status}}"><span class="badge">{{up .Status}}</span></td><td>{{n . "pass"}}</td><td>{{n . "warn"}}</td><td>{{n . "fail"}}</td><td>{{n . "n/a"}}</td></tr>
{{end}}</table>
</section>
<section id="scope">
<h2>Scope</h2>
{{range .Scope}}<h3>{{.Layer}}</h3><p>{{.Text}}</p>
{{end}}</section>
{{$r := .R}}{{range .Vaults}}
<section class="vault" id="vault-{{v .ID}}">
<h2>Vault {{v .Name}}</h2>
<p class="small">ID {{v .ID}} · status <span class="badge {{cls .Status}}">{{up .Status}}</span></p>
<table>
<tr><th>check</th><th>status</th><th>summary</th><th>remediation</th><th>controls</th></tr>
{{range .Checks}}<tr><td><code>{{v .ID}}</code><br>{{v .Title}}</td><td class="{{cls .Status}}"><span class="badge">{{up .Status}}</span>{{if .HeldSince}}<br><span class="small">{{held $r.Generated .HeldSince}}</span>{{end}}</td><td>{{v .Summary}}</td><td>{{v .Remediation}}</td><td class="small">{{v (join .Controls "; ")}}</td></tr>
{{end}}</table>
<h3>Evidence</h3>
<table>
<tr><th>check</th><th>fact</th><th>value</th><th>source</th><th>read</th></tr>
{{range $c := .Checks}}{{range .Evidence}}<tr><td><code>{{v $c.ID}}</code></td><td>{{v .Fact}}</td><td>{{v .Value}}</td><td>{{v .Source}}</td><td>{{time .Read}}</td></tr>
{{end}}{{end}}</table>
{{if $r.HistorySince}}<h3>Over time (since {{date $r.HistorySince}}, {{.Records}} daily records)</h3>
<table><tr><th>control</th><th>status</th><th>held</th></tr>
{{range .Controls}}<tr><td>{{v .Control}}</td><td class="{{cls .Status}}">{{up .Status}}</td><td>{{held $r.Generated .Since}}</td></tr>
{{end}}</table>
<table><tr><th>time</th><th>check</th><th>from</th><th>to</th></tr>
{{range .Changes}}<tr><td>{{time .At}}</td><td><code>{{v .Check}}</code></td><td class="{{cls .From}}">{{up .From}}</td><td class="{{cls .To}}">{{up .To}}</td></tr>
{{else}}<tr><td colspan="4">No check changed state.</td></tr>
{{end}}</table>{{end}}
</section>
{{end}}
</body>
</html>
`))

// WriteHTML writes r as one self-contained HTML page: inline CSS, no
// script, no external resource (its Content-Security-Policy forbids
// both), every value escaped by html/template.
func WriteHTML(w io.Writer, r *Report) error {
	return htmlTmpl.Execute(w, struct {
		*Report
		R     *Report
		Scope []ScopeItem
	}{r, r, Scope})
}
