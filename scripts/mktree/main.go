// Command mktree writes the many-small-files tree of scripts/bench-scale.sh:
// DIRS directories of FILES files each, every file 100 B to 8 KB of
// pseudo-random (incompressible) bytes, the same bytes for the same seed on
// every run and machine.
//
//	go run ./scripts/mktree -dirs 1000 -files 1000 /tmp/tree
//	go run ./scripts/mktree -dirs 1000 -files 1000 -rewrite 1 /tmp/tree
//
// With -rewrite P it writes again, with other contents and sizes, P percent
// of the files (every 100/P-th file) of a tree it wrote before, as an edit
// between two backups would.
//
// With -big N it writes instead N files of -size bytes each (big000000,
// big000001, ...) straight into DIR, pseudo-random like the small ones, for
// scripts/bench-big.sh; another -seed gives other contents.
//
//	go run ./scripts/mktree -big 12 -size 1000000000 -seed 1 /tmp/big
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"
)

const (
	minSize = 100
	maxSize = 8192
)

func main() {
	dirs := flag.Int("dirs", 1000, "number of directories")
	files := flag.Int("files", 1000, "files per directory")
	seed := flag.Uint64("seed", 15, "seed of the contents")
	rewrite := flag.Int("rewrite", 0, "rewrite this percentage (1-100) of an existing tree's files instead of writing the tree")
	big := flag.Int("big", 0, "write this many big files of -size bytes instead of the tree")
	size := flag.Int64("size", 1e9, "bytes in each big file (with -big)")
	workers := flag.Int("workers", runtime.GOMAXPROCS(0), "files written in parallel")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: mktree [flags] DIR\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 || *dirs < 1 || *files < 1 || *rewrite < 0 || *rewrite > 100 || *workers < 1 || *big < 0 || *size < 0 {
		flag.Usage()
		os.Exit(2)
	}
	root := flag.Arg(0)
	start := time.Now()
	var (
		n     int
		bytes int64
		err   error
	)
	if *big > 0 {
		n, bytes, err = writeBig(root, *big, *size, *seed, *workers)
	} else {
		n, bytes, err = write(root, *dirs, *files, *seed, *rewrite, *workers)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mktree:", err)
		os.Exit(1)
	}
	fmt.Printf("%d files, %d bytes in %s\n", n, bytes, time.Since(start).Round(time.Millisecond))
}

// write creates the tree (rewrite 0) or rewrites every (100/rewrite)-th
// file of it; the directories are shared out among the workers.
func write(root string, dirs, files int, seed uint64, rewrite, workers int) (int, int64, error) {
	every := 0
	if rewrite > 0 {
		every = 100 / rewrite
		seed ^= 0x5eed_0f_ed17 // other contents than the tree's
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		count int
		total int64
	)
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, maxSize)
			n, b := 0, int64(0)
			for d := range next {
				dir := filepath.Join(root, fmt.Sprintf("d%04d", d))
				if every == 0 {
					if err := os.MkdirAll(dir, 0o755); err != nil {
						setErr(&mu, &first, err)
						continue
					}
				}
				for f := range files {
					i := d*files + f
					if every > 0 && i%every != 0 {
						continue
					}
					data := content(buf, seed, uint64(i))
					if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%06d", i)), data, 0o644); err != nil {
						setErr(&mu, &first, err)
						break
					}
					n++
					b += int64(len(data))
				}
			}
			mu.Lock()
			count += n
			total += b
			mu.Unlock()
		}()
	}
	for d := range dirs {
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed {
			break
		}
		next <- d
	}
	close(next)
	wg.Wait()
	return count, total, first
}

func setErr(mu *sync.Mutex, first *error, err error) {
	mu.Lock()
	if *first == nil {
		*first = err
	}
	mu.Unlock()
}

// content fills buf with file i's bytes: its size and contents depend on
// the seed and i only, whichever worker writes it.
func content(buf []byte, seed, i uint64) []byte {
	r := rand.New(rand.NewPCG(seed, i))
	size := minSize + r.IntN(maxSize-minSize+1)
	b := buf[:size]
	for j := 0; j < size; j += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], r.Uint64())
		copy(b[j:], w[:])
	}
	return b
}

// writeBig writes files big000000... of size bytes each into root, every
// file its own pseudo-random stream of the seed and its number, in 1 MiB
// writes; the files are shared out among the workers.
func writeBig(root string, files int, size int64, seed uint64, workers int) (int, int64, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return 0, 0, err
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1<<20)
			for i := range next {
				if err := writeBigFile(filepath.Join(root, fmt.Sprintf("big%06d", i)), buf, size, seed, uint64(i)); err != nil {
					setErr(&mu, &first, err)
				}
			}
		}()
	}
	for i := range files {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		return 0, 0, first
	}
	return files, int64(files) * size, nil
}

func writeBigFile(name string, buf []byte, size int64, seed, i uint64) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(seed, i|1<<63)) // apart from the small files' streams
	for left := size; left > 0; {
		b := buf
		if left < int64(len(b)) {
			b = b[:left]
		}
		for j := 0; j < len(b); j += 8 {
			var w [8]byte
			binary.LittleEndian.PutUint64(w[:], r.Uint64())
			copy(b[j:], w[:])
		}
		if _, err := f.Write(b); err != nil {
			f.Close()
			return err
		}
		left -= int64(len(b))
	}
	return f.Close()
}
