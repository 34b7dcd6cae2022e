package main

import (
	"bytes"
	"testing"
)

// TestTermWriter: unsafe runes are escaped even when a write cuts them
// in two; safe text, tabs, newlines and multi-byte runes pass unchanged.
func TestTermWriter(t *testing.T) {
	for _, tc := range []struct {
		in, human, json string
	}{
		{"plain\ttext\n", "plain\ttext\n", "plain\ttext\n"},
		{"été 日本 ✓\n", "été 日本 ✓\n", "été 日本 ✓\n"},
		{"a\x1b[2Kb\rc", `a\x1b[2Kb\rc`, `a\u001b[2Kb\u000dc`},
		{"x\u202ey\u2069z\u009b\x7f", `x\u202ey\u2069z\u009b\x7f`, `x\u202ey\u2069z\u009b\u007f`},
		{"bad\x9bbyte\xff", `bad\x9bbyte\xff`, `bad\ufffdbyte\ufffd`},
	} {
		for _, json := range []bool{false, true} {
			want := tc.human
			if json {
				want = tc.json
			}
			for _, step := range []int{1, 2, 3, len(tc.in)} {
				var b bytes.Buffer
				w := &termWriter{w: &b, json: json}
				for i := 0; i < len(tc.in); i += step {
					w.Write([]byte(tc.in[i:min(i+step, len(tc.in))]))
				}
				w.Flush()
				if b.String() != want {
					t.Errorf("json %v, writes of %d bytes: %q → %q, want %q", json, step, tc.in, b.String(), want)
				}
			}
		}
	}
	if got := safeText("a\tb\nc\x1b"); got != `a\tb\nc\x1b` {
		t.Errorf("safeText: %q", got)
	}
	if s := "ordinary name-1.txt"; safeText(s) != s {
		t.Errorf("safeText changed a safe string")
	}
}
