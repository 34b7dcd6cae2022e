package audit

import (
	"context"
	"fmt"
	"time"
)

// Filter selects entries for Entries. Zero fields select everything.
type Filter struct {
	Vault     string    // exact vault name
	Principal string    // exact principal
	Token     string    // exact token ID
	Op        string    // exact operation
	Outcome   string    // exact outcome
	Since     time.Time // entries at or after
	Until     time.Time // entries before
	Limit     int       // at most this many, the newest; 0: all
}

func (f *Filter) match(e *Entry) bool {
	return (f.Vault == "" || e.Vault == f.Vault) &&
		(f.Principal == "" || e.Principal == f.Principal) &&
		(f.Token == "" || e.Token == f.Token) &&
		(f.Op == "" || e.Op == f.Op) &&
		(f.Outcome == "" || e.Outcome == f.Outcome) &&
		(f.Since.IsZero() || !e.Time.Before(f.Since)) &&
		(f.Until.IsZero() || e.Time.Before(f.Until))
}

// Indexed is an entry and its index in the log.
type Indexed struct {
	Index int64
	Entry Entry
}

// Entries returns the stored entries f selects, in log order. It shows
// what is stored and does not verify it (Verify does); a record that
// does not parse is an error naming its index.
func Entries(ctx context.Context, store Store, f Filter) ([]Indexed, error) {
	var out []Indexed
	for from := int64(0); ; {
		recs, err := store.AuditRecords(ctx, from, verifyBatch)
		if err != nil {
			return nil, fmt.Errorf("list audit entries: %w", err)
		}
		for _, r := range recs {
			e, err := ParseRecord(r.Data)
			if err != nil {
				return nil, fmt.Errorf("list audit entries: entry %d: %w (run coffer audit verify)", r.Index, err)
			}
			if !f.match(&e) {
				continue
			}
			out = append(out, Indexed{Index: r.Index, Entry: e})
			if f.Limit > 0 && len(out) > 2*f.Limit {
				out = append(out[:0], out[len(out)-f.Limit:]...) // keep memory bounded by the limit
			}
		}
		if len(recs) < verifyBatch {
			break
		}
		from = recs[len(recs)-1].Index + 1
	}
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[len(out)-f.Limit:]
	}
	return out, nil
}
