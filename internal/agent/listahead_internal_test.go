package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// A listing read ahead gives the names sorted with their lstat results; a
// directory that cannot be listed gives none (the walk lists it itself
// and reports why); taking a listing frees its slot.
func TestListAheadTakes(t *testing.T) {
	dir := t.TempDir()
	for i := range 200 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", 199-i)), []byte{byte(i)}, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b := &backup{ahead: map[string]*dirList{}, aheadSlots: make(chan struct{}, listAheadMax), exclude: compileT(t, ExcludeRules{})}
	ctx := context.Background()
	for round := range 3 * listAheadMax {
		b.listAhead(ctx, dir)
		b.listAhead(ctx, filepath.Join(dir, "missing"))
		if l := b.takeAhead(ctx, filepath.Join(dir, "missing")); l != nil {
			t.Fatalf("round %d: a listing of a missing directory", round)
		}
		l := b.takeAhead(ctx, dir)
		if l == nil {
			t.Fatalf("round %d: no listing taken", round)
		}
		if len(l.names) != 200 || len(l.stats) != 200 {
			t.Fatalf("%d names, %d results", len(l.names), len(l.stats))
		}
		for i, name := range l.names {
			if want := fmt.Sprintf("f%03d", i); name != want {
				t.Fatalf("name %d = %s, want %s", i, name, want)
			}
			st := l.stats[i]
			if st.err != nil || st.st == nil || st.st.Size != 1 {
				t.Fatalf("%s: %+v", name, st)
			}
		}
	}
	b.aheadWG.Wait()
	if len(b.aheadSlots) != 0 || len(b.ahead) != 0 {
		t.Errorf("%d slots, %d listings held after all were taken", len(b.aheadSlots), len(b.ahead))
	}
	if b.takeAhead(ctx, dir) != nil {
		t.Error("a listing taken twice")
	}
}
