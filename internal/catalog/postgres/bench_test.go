package postgres

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-backup/coffer/internal/vault"
)

// BenchmarkKeyAnchor is the read a server sharing a PostgreSQL catalog
// makes at every request to an open vault (engine RefreshKeys): has
// another server installed a newer keyring generation? As the whole
// anchor with its proposals (two queries), and as the generation alone
// (KeyGeneration, one query, what RefreshKeys uses). Besides the time
// per read it reports this process's processor time per read
// (client-us/op) and that of every PostgreSQL process on the machine
// (pg-us/op; other clusters' work counts too: run it on a quiet machine).
func BenchmarkKeyAnchor(b *testing.B) {
	c, _ := openTemp(b)
	ctx := context.Background()
	v := vault.VaultRecord{ID: vault.ID{1}, Name: "v", Created: time.Unix(1, 0)}
	if err := c.CreateVault(ctx, v); err != nil {
		b.Fatal(err)
	}
	a := vault.KeyAnchor{Generation: 1, KEK: vault.KeyRef{Provider: "platform", KeyID: "k", Version: "3"}, Alg: "hkdf-sha256-aes-256-gcm", Time: time.Unix(2, 0)}
	if err := c.SetKeyAnchor(ctx, v.ID, a, 0); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		read func() (uint64, error)
	}{
		{"anchor", func() (uint64, error) { a, _, err := c.KeyAnchor(ctx, v.ID); return a.Generation, err }},
		{"generation", func() (uint64, error) { return c.KeyGeneration(ctx, v.ID) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			self0, pg0 := selfCPU(), postgresCPU()
			for b.Loop() {
				if gen, err := bc.read(); err != nil || gen != 1 {
					b.Fatalf("generation %d, %v", gen, err)
				}
			}
			b.ReportMetric(float64((selfCPU()-self0).Microseconds())/float64(b.N), "client-us/op")
			b.ReportMetric(float64((postgresCPU()-pg0).Microseconds())/float64(b.N), "pg-us/op")
		})
	}
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// postgresCPU sums the processor time of the processes named postgres.
func postgresCPU() time.Duration {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var ticks int64
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if i < 0 || j < i || s[i+1:j] != "postgres" {
			continue
		}
		f := strings.Fields(s[j+1:])
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		k, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + k
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}
