package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"unicode/utf8"
)

// What coffer prints includes values other people chose: token, principal
// and vault names, hosts, paths, tags, request summaries, audit entries,
// file names, and the messages of a server that may be hostile. Printed
// raw, a value holding ESC-based sequences, a carriage return or a bidi
// override can rewrite what the user sees ("\x1b[2K\rdeleting nothing").
// This file is the one place that decides what is safe to send to a
// terminal:
//
//   - every human-readable stream (a.stdout, a.stderr) goes through a
//     termWriter, which escapes each unsafe rune but newline and tab, Go
//     style (\x1b, \r, \u202e) — whatever a command prints;
//   - safeText escapes newline and tab as well, for a value printed inside
//     a line or a table cell, where it would forge a line of its own;
//   - --json output goes through a jsonWriter, which escapes the unsafe
//     runes encoding/json leaves raw (DEL, C1, bidi controls) as \uXXXX:
//     the same JSON value, safe on a terminal.

// unsafeRune reports whether r must not reach a terminal raw: C0 controls,
// DEL, C1 controls (which some terminals act on like their ESC forms), and
// the bidirectional formatting characters that reorder what is shown
// (embeddings and overrides U+202A–U+202E, isolates U+2066–U+2069, and
// the marks U+200E, U+200F, U+061C).
func unsafeRune(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c:
		return true
	}
	return false
}

// appendEscaped appends p to dst with each unsafe rune (but those keep
// allows) and each byte that is not UTF-8 escaped: Go style for a human,
// \uXXXX (U+FFFD for a bad byte) for JSON.
func appendEscaped(dst []byte, p []byte, keep func(rune) bool, json bool) []byte {
	for len(p) > 0 {
		r, n := utf8.DecodeRune(p)
		switch {
		case r == utf8.RuneError && n <= 1:
			if json {
				dst = append(dst, `\ufffd`...)
			} else {
				dst = fmt.Appendf(dst, `\x%02x`, p[0])
			}
		case !unsafeRune(r) || keep(r):
			dst = append(dst, p[:n]...)
		case json:
			dst = fmt.Appendf(dst, `\u%04x`, r)
		case r == '\n':
			dst = append(dst, `\n`...)
		case r == '\r':
			dst = append(dst, `\r`...)
		case r == '\t':
			dst = append(dst, `\t`...)
		case r < 0x80:
			dst = fmt.Appendf(dst, `\x%02x`, r)
		default:
			dst = fmt.Appendf(dst, `\u%04x`, r)
		}
		p = p[n:]
	}
	return dst
}

func keepNone(rune) bool { return false }

func keepLines(r rune) bool { return r == '\n' || r == '\t' }

// safeText returns s with every unsafe rune, newline and tab included,
// and every byte that is not UTF-8 escaped: for a value printed inside a
// line or a table cell. A safe string is returned as it is.
func safeText(s string) string {
	for i, r := range s {
		if unsafeRune(r) || r == utf8.RuneError {
			b := append([]byte(nil), s[:i]...)
			return string(appendEscaped(b, []byte(s[i:]), keepNone, false))
		}
	}
	return s
}

// safeList is safeText of each value, joined with sep.
func safeList(vs []string, sep string) string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = safeText(v)
	}
	return strings.Join(out, sep)
}

// termWriter escapes what is written to w: unsafe runes (but newline and
// tab), Go style, or \uXXXX with json. A rune split across writes is held
// until its end arrives. It is safe for concurrent use (a server logs
// from many goroutines).
type termWriter struct {
	w    io.Writer
	json bool
	mu   sync.Mutex
	held []byte // the start of a rune cut at the end of the last write
	buf  []byte
}

func (t *termWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(t.held) > 0 {
		p = append(t.held, p...)
		t.held = nil
	}
	// Hold an incomplete rune at the end (at most 3 bytes).
	cut := len(p)
	for i := len(p) - 1; i >= 0 && i >= len(p)-3; i-- {
		if utf8.RuneStart(p[i]) {
			if !utf8.FullRune(p[i:]) {
				cut = i
			}
			break
		}
	}
	t.held = append(t.held, p[cut:]...)
	t.buf = appendEscaped(t.buf[:0], p[:cut], keepLines, t.json)
	if _, err := t.w.Write(t.buf); err != nil {
		return 0, err
	}
	return n, nil
}

// Flush writes a rune left incomplete (escaped, as the bytes it is).
func (t *termWriter) Flush() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.held) == 0 {
		return nil
	}
	b := appendEscaped(nil, t.held, keepLines, t.json)
	t.held = nil
	_, err := t.w.Write(b)
	return err
}
