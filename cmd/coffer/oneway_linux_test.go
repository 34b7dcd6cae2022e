package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
)

// TestOneWayDoorAsksOnATerminal: on a terminal, a change that cannot be
// undone is announced and asked about; "n" (or anything but yes) changes
// nothing, "y" makes it.
func TestOneWayDoorAsksOnATerminal(t *testing.T) {
	e := newEnv(t)
	mustCoffer(t, e, "vault", "create", "default") // not single-user
	backupJSON(t, e, smallData(t))
	ask := func(answer string) (int, string) {
		pty, tty := openPTY(t)
		got := make(chan []byte)
		go func() {
			b, _ := io.ReadAll(pty) // until the tty closes (EIO)
			got <- b
		}()
		if _, err := pty.Write([]byte(answer + "\n")); err != nil {
			t.Fatal(err)
		}
		e.tick()
		var out bytes.Buffer
		code := runWith(context.Background(), []string{"vault", "set", "--min-retention", "30d"}, tty, &out, tty, e.getenv, e.now)
		tty.Close()
		return code, string(<-got)
	}
	code, screen := ask("n")
	if code != exitFailure || !strings.Contains(screen, "cannot be undone") || !strings.Contains(screen, "[y/N]") {
		t.Fatalf("answered n: exit %d, terminal showed %q", code, screen)
	}
	if p := protectionJSON(t, e); p["min_retention"] != "0h" && p["min_retention"] != "0d" && p["min_retention_seconds"] != float64(0) {
		t.Fatalf("answered n, but the setting changed: %v", p)
	}
	if code, screen := ask("y"); code != exitOK {
		t.Fatalf("answered y: exit %d, terminal showed %q", code, screen)
	}
	if p := protectionJSON(t, e); p["min_retention"] != "30d" {
		t.Fatalf("answered y, but the setting is %v", p)
	}
}
