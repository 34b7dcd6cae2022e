package format_test

import (
	"sync"
	"testing"

	"github.com/zeebo/blake3"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

func blake3Keyed(tb testing.TB, key seal.Key, data []byte) vault.ID {
	tb.Helper()
	h, err := blake3.NewKeyed(key[:])
	if err != nil {
		tb.Fatal(err)
	}
	h.Write(data)
	var id vault.ID
	h.Sum(id[:0])
	return id
}

func TestIDHasher(t *testing.T) {
	key := testKey("chunk-id")
	inputs := [][]byte{nil, {0}, []byte("abc"), testData(1, 1023), testData(2, 1024), testData(3, 1025), testData(4, 1<<20)}
	h := format.NewIDHasher(key)
	fresh := func(d []byte) vault.ID { return format.NewIDHasher(key).ID(d) }
	for i, d := range inputs {
		want := blake3Keyed(t, key, d)
		if got := h.ID(d); got != want {
			t.Errorf("input %d: ID %s, blake3 keyed %s", i, got, want)
		}
		if got := fresh(d); got != want {
			t.Errorf("input %d: fresh hasher %s", i, got)
		}
	}
	// A reused hasher resets between calls: same IDs in reverse order.
	for i := len(inputs) - 1; i >= 0; i-- {
		if got := h.ID(inputs[i]); got != fresh(inputs[i]) {
			t.Errorf("reused hasher, input %d: %s", i, got)
		}
	}
	// Clones, used in between, do not disturb each other or the original.
	c := h.Clone()
	h.ID(inputs[5])
	c2 := c.Clone()
	c.ID(inputs[6])
	for i, d := range inputs {
		if a, b, cc := h.ID(d), c.ID(d), c2.ID(d); a != fresh(d) || b != a || cc != a {
			t.Errorf("clone, input %d: %s %s %s", i, a, b, cc)
		}
	}
	// Keyed: another key gives other IDs, and unkeyed BLAKE3 is not used.
	other := format.NewIDHasher(testKey("other chunk-id"))
	for i, d := range inputs {
		if other.ID(d) == h.ID(d) {
			t.Errorf("input %d: same ID under two keys", i)
		}
		if vault.ID(blake3.Sum256(d)) == h.ID(d) {
			t.Errorf("input %d: ID is unkeyed BLAKE3", i)
		}
	}
	if h.ID([]byte("a")) == h.ID([]byte("b")) {
		t.Error("distinct inputs, same ID")
	}
}

func TestIDHasherConcurrentClones(t *testing.T) {
	key := testKey("chunk-id")
	h := format.NewIDHasher(key)
	data := testData(9, 100000)
	want := blake3Keyed(t, key, data)
	var wg sync.WaitGroup
	for range 8 {
		c := h.Clone()
		wg.Go(func() {
			for range 50 {
				if c.ID(data) != want {
					t.Error("clone in a goroutine gives another ID")
					return
				}
			}
		})
	}
	wg.Wait()
}
