package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/vault"
)

// statsTotals is what coffer stats counts, for one snapshot or all.
type statsTotals struct {
	Files     uint64 `json:"files"`
	Dirs      uint64 `json:"dirs"`
	TotalSize uint64 `json:"total_size"` // logical: the sum of file sizes
	// raw-data mode only.
	Blobs     uint64 `json:"blobs,omitempty"`
	DataBlobs uint64 `json:"data_blobs,omitempty"`
	TreeBlobs uint64 `json:"tree_blobs,omitempty"`
	// RawSize is the unique blobs' size before compression.
	RawSize uint64 `json:"raw_size,omitempty"`
	// StoredSize is their sealed size in packs: local vaults only (a
	// vault server does not tell it).
	StoredSize *uint64 `json:"stored_size,omitempty"`
	// DedupRatio is TotalSize / RawSize; CompressionRatio RawSize /
	// StoredSize.
	DedupRatio       float64 `json:"dedup_ratio,omitempty"`
	CompressionRatio float64 `json:"compression_ratio,omitempty"`
}

type statsSnapshotJSON struct {
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	Host string    `json:"host"`
	statsTotals
}

type statsJSON struct {
	Mode      string              `json:"mode"`
	Snapshots int                 `json:"snapshots"`
	Total     statsTotals         `json:"total"`
	Each      []statsSnapshotJSON `json:"per_snapshot"`
}

// blobLookup is the optional capability of a local vault's view: where
// a blob is stored, with its sealed length.
type blobLookup interface {
	Lookup(t vault.BlobType, id vault.ID) (vault.BlobRecord, bool)
}

type statsBlobKey struct {
	t  vault.BlobType
	id vault.ID
}

// blobCounter counts unique blobs and their sizes. A blob is counted once
// in the total, and once in each snapshot that references it.
type blobCounter struct {
	seen   map[statsBlobKey]bool
	stored bool // every size so far came with its stored length
}

func (c *blobCounter) add(repo agent.RestoreRepo, t vault.BlobType, id vault.ID, total, snap *statsTotals, snapSeen map[statsBlobKey]bool) error {
	k := statsBlobKey{t, id}
	if snapSeen[k] {
		return nil
	}
	var raw, stored uint64
	if l, ok := repo.(blobLookup); ok {
		r, found := l.Lookup(t, id)
		if !found {
			return fmt.Errorf("%s blob %s: %w in the index", t, id, vault.ErrNotFound)
		}
		raw, stored = uint64(r.RawLen), uint64(r.Length)
	} else {
		n, err := repo.BlobSize(t, id)
		if err != nil {
			return err
		}
		raw, c.stored = uint64(n), false
	}
	snapSeen[k] = true
	count := func(s *statsTotals) {
		s.Blobs++
		if t == vault.TreeBlob {
			s.TreeBlobs++
		} else {
			s.DataBlobs++
		}
		s.RawSize += raw
		if s.StoredSize == nil {
			s.StoredSize = new(uint64)
		}
		*s.StoredSize += stored
	}
	count(snap)
	if !c.seen[k] {
		c.seen[k] = true
		count(total)
	}
	return nil
}

func (s *statsTotals) ratios(withStored bool) {
	if !withStored {
		s.StoredSize = nil
	}
	if s.RawSize > 0 {
		s.DedupRatio = float64(s.TotalSize) / float64(s.RawSize)
	}
	if s.StoredSize != nil && *s.StoredSize > 0 {
		s.CompressionRatio = float64(s.RawSize) / float64(*s.StoredSize)
	}
}

func newStatsCmd(a *app) *cobra.Command {
	var jsonOut bool
	var mode string
	var sf selectFlags
	var maxEntries uint64
	cmd := &cobra.Command{
		Use:   "stats [SNAPSHOT...]",
		Short: "Show how much the snapshots hold and how much the vault stores for them",
		Long: `Show sizes of the snapshots given (IDs, prefixes or "latest"), or of every
snapshot --host, --path and --tag select (all of them by default), each and in
total, as restic's stats does:

  --mode restore-size (default)  files, directories and the sum of the file
                                 sizes: what a restore would write
  --mode raw-data                also the unique blobs (chunks and trees) the
                                 snapshots reference, each counted once: their
                                 size before compression and, on a local vault,
                                 their stored (compressed, sealed) size; the
                                 dedup ratio (restore size / unique size) and
                                 the compression ratio (unique / stored)

The same file kept unchanged in ten snapshots counts ten times in the restore
size and once in the raw data. Through a vault server, restore-size needs a
token that may list the vault (backup-reader or above); raw-data needs one that
may read data (backup-operator or above), as chunk sizes tell about contents,
and shows no stored size: the server tells blob sizes only of what the token
may read, and of a source's snapshot only its own. It visits no more entries of
a snapshot than its record counts (--max-entries), as ls does.`,
		Example: `  coffer stats
  coffer stats latest --mode raw-data
  coffer stats --host web01 --json
  coffer stats 1a2b3c4d 5e6f7a8b --mode raw-data`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if mode != "restore-size" && mode != "raw-data" {
				return fmt.Errorf("--mode %s: give restore-size or raw-data", quoteArg(mode))
			}
			raw := mode == "raw-data"
			sel, err := sf.selection()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			v, err := a.open(ctx, false)
			if err != nil {
				return err
			}
			defer v.Close()
			snaps, err := a.selectSnapshots(ctx, v, args, sel)
			if err != nil {
				return err
			}
			out := statsJSON{Mode: mode, Snapshots: len(snaps), Each: []statsSnapshotJSON{}}
			bc := &blobCounter{seen: map[statsBlobKey]bool{}, stored: true}
			for _, s := range snaps {
				repo, err := v.ForSnapshot(ctx, s)
				if err != nil {
					return err
				}
				one := statsSnapshotJSON{ID: s.ID.String(), Time: s.Time, Host: s.Host}
				snapSeen := map[statsBlobKey]bool{}
				if raw {
					if err := bc.add(repo, vault.TreeBlob, s.Tree, &out.Total, &one.statsTotals, snapSeen); err != nil {
						return statsErr(s, err)
					}
				}
				err = agent.WalkAhead(ctx, repo, s.Tree, "/", entryBound(s, maxEntries), func(p string, n *format.Node) error {
					switch n.Kind {
					case format.KindDir:
						one.Dirs++
						if raw {
							return bc.add(repo, vault.TreeBlob, n.Subtree, &out.Total, &one.statsTotals, snapSeen)
						}
					default:
						one.Files++
						one.TotalSize += n.Size
						if raw {
							for _, id := range n.Content {
								if err := bc.add(repo, vault.DataBlob, id, &out.Total, &one.statsTotals, snapSeen); err != nil {
									return err
								}
							}
						}
					}
					return nil
				})
				if err != nil {
					return statsErr(s, err)
				}
				out.Total.Files += one.Files
				out.Total.Dirs += one.Dirs
				out.Total.TotalSize += one.TotalSize
				if raw {
					one.ratios(bc.stored)
				}
				out.Each = append(out.Each, one)
			}
			if raw {
				out.Total.ratios(bc.stored)
			}
			if jsonOut {
				enc := json.NewEncoder(a.jsonStdout)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			w := a.stdout
			fmt.Fprintf(w, "Stats in %s mode:\n", mode)
			fmt.Fprintf(w, "  Snapshots processed:  %d\n", len(snaps))
			fmt.Fprintf(w, "     Total file count:  %d\n", out.Total.Files)
			fmt.Fprintf(w, "      Total dir count:  %d\n", out.Total.Dirs)
			fmt.Fprintf(w, "   Total restore size:  %s\n", humanBytes(out.Total.TotalSize))
			if raw {
				t := out.Total
				fmt.Fprintf(w, "     Total blob count:  %d (%d data, %d tree)\n", t.Blobs, t.DataBlobs, t.TreeBlobs)
				fmt.Fprintf(w, "  Total uncompressed size:  %s\n", humanBytes(t.RawSize))
				if t.StoredSize != nil {
					fmt.Fprintf(w, "    Total stored size:  %s\n", humanBytes(*t.StoredSize))
				} else {
					fmt.Fprintf(w, "    Total stored size:  (not told by a vault server)\n")
				}
				fmt.Fprintf(w, "          Dedup ratio:  %.2fx\n", t.DedupRatio)
				if t.CompressionRatio > 0 {
					fmt.Fprintf(w, "    Compression ratio:  %.2fx\n", t.CompressionRatio)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the totals and each snapshot's as JSON")
	cmd.Flags().StringVar(&mode, "mode", "restore-size", "what to count: restore-size or raw-data")
	sf.register(cmd, true)
	maxEntriesFlag(cmd, &maxEntries)
	return cmd
}

// statsErr says which snapshot failed, and what a raw-data run through a
// server needs.
func statsErr(s vault.SnapshotRecord, err error) error {
	if errors.Is(err, api.ErrForbidden) {
		return fmt.Errorf("snapshot %s: %w (--mode raw-data reads blob sizes, which need a token that may read data: backup-operator or above; --mode restore-size needs only backup-reader)", s.ID.Short(), err)
	}
	return fmt.Errorf("snapshot %s: %w", s.ID.Short(), err)
}
