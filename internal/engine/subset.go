package engine

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/coffer-backup/coffer/internal/vault"
)

// ReadSubset selects the packs a check --read-data-subset reads (restic's
// semantics). Exactly one of its forms is set:
//
//   - Percent: that share of the packs, chosen at random on each run;
//   - N of M: the N-th of M fixed groups of packs (a pack's group depends
//     on its ID alone), so that 1/M … M/M read every pack exactly once;
//   - Bytes: random packs whose sizes add up to at most that many bytes.
//
// The zero value selects every pack.
type ReadSubset struct {
	Percent float64
	N, M    uint64
	Bytes   int64
}

// maxSubsetGroups bounds M: a group must be a sensible share of a vault.
const maxSubsetGroups = 1 << 20

// ParseReadSubset parses "10%", "2.5%", "1/5" or a size ("500M", "2G",
// "1048576"; suffixes K, M, G, T are binary, an optional trailing "B" or
// "iB" is allowed).
func ParseReadSubset(s string) (ReadSubset, error) {
	bad := func(why string) (ReadSubset, error) {
		return ReadSubset{}, fmt.Errorf("read-data subset %q: %s (want a percentage such as 10%%, a group n/m such as 1/5, or a size such as 2G)", s, why)
	}
	if len(s) > 64 {
		return ReadSubset{}, fmt.Errorf("read-data subset: %d characters, at most 64", len(s))
	}
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return bad("empty")
	case strings.HasSuffix(s, "%"):
		p, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
		if err != nil || math.IsNaN(p) || p <= 0 || p > 100 {
			return bad("a percentage must be more than 0 and at most 100")
		}
		return ReadSubset{Percent: p}, nil
	case strings.Contains(s, "/"):
		a, b, _ := strings.Cut(s, "/")
		n, err1 := strconv.ParseUint(a, 10, 64)
		m, err2 := strconv.ParseUint(b, 10, 64)
		if err1 != nil || err2 != nil || m == 0 || n == 0 || n > m {
			return bad("a group n/m needs 1 ≤ n ≤ m")
		}
		if m > maxSubsetGroups {
			return bad(fmt.Sprintf("at most %d groups", maxSubsetGroups))
		}
		return ReadSubset{N: n, M: m}, nil
	}
	// "2G", "2GB", "2GiB" and "2147483648" are all binary sizes.
	u := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(s), "B"), "I")
	mult := int64(1)
	if n := len(u); n > 0 {
		switch u[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			u = u[:n-1]
		}
	}
	f, err := strconv.ParseFloat(u, 64)
	if err != nil || math.IsNaN(f) || f <= 0 || f*float64(mult) >= math.MaxInt64/2 {
		return bad("not a percentage, group or size")
	}
	b := int64(f * float64(mult))
	if b < 1 {
		return bad("a size must be at least one byte")
	}
	return ReadSubset{Bytes: b}, nil
}

// IsZero reports whether the subset is every pack.
func (s ReadSubset) IsZero() bool { return s == ReadSubset{} }

// String is the subset in the form ParseReadSubset reads (a size in
// bytes, without a unit).
func (s ReadSubset) String() string {
	switch {
	case s.Percent > 0:
		return strconv.FormatFloat(s.Percent, 'f', -1, 64) + "%"
	case s.M > 0:
		return fmt.Sprintf("%d/%d", s.N, s.M)
	case s.Bytes > 0:
		return strconv.FormatInt(s.Bytes, 10)
	}
	return "all"
}

// group is the 0-based group of M a pack belongs to: its ID's first 8
// bytes modulo M. Pack IDs are hashes, so the groups are of about equal
// size, and a pack never changes group.
func subsetGroup(id vault.ID, m uint64) uint64 {
	return binary.BigEndian.Uint64(id[:8]) % m
}

// selectPacks returns the IDs of the packs of the subset; Bytes counts
// the catalog's pack sizes.
func (s ReadSubset) selectPacks(packs []vault.PackRecord) map[vault.ID]bool {
	out := map[vault.ID]bool{}
	switch {
	case s.M > 0:
		for _, p := range packs {
			if subsetGroup(p.ID, s.M) == s.N-1 {
				out[p.ID] = true
			}
		}
	case s.Percent > 0:
		// Rounded up: 10% of 5 packs reads one, never none.
		n := int(math.Ceil(float64(len(packs)) * s.Percent / 100))
		for _, i := range rand.Perm(len(packs))[:min(n, len(packs))] {
			out[packs[i].ID] = true
		}
	case s.Bytes > 0:
		left := s.Bytes
		for _, i := range rand.Perm(len(packs)) {
			if sz := packs[i].Size; sz <= left {
				out[packs[i].ID] = true
				left -= sz
			}
		}
	default:
		for _, p := range packs {
			out[p.ID] = true
		}
	}
	return out
}
