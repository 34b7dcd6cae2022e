package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/coffer-backup/coffer/internal/agent"
)

// progressLine draws a live status line on a terminal and nothing
// elsewhere (pipes, files, CI logs).
type progressLine struct {
	mu    sync.Mutex
	w     io.Writer
	width int
	verb  string
	shown bool
}

// newProgress returns nil when w is not a terminal or progress is off.
func (a *app) newProgress(verb string) *progressLine {
	if a.noProg {
		return nil
	}
	f, ok := a.rawStderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	width, _, err := term.GetSize(int(f.Fd()))
	if err != nil || width < 40 {
		width = 80
	}
	return &progressLine{w: f, width: width, verb: verb}
}

func (p *progressLine) update(s agent.Progress) {
	if p == nil {
		return
	}
	rate := 0.0
	if s.Elapsed > 0 {
		rate = float64(s.Bytes) / s.Elapsed.Seconds()
	}
	var b strings.Builder
	if s.ScanDone && s.TotalFiles > 0 {
		fmt.Fprintf(&b, "[%s] %s %d/%d files, %s", clock(s.Elapsed), p.verb, s.Files, s.TotalFiles, humanBytes(s.Bytes))
	} else {
		fmt.Fprintf(&b, "[%s] %s %d files, %s", clock(s.Elapsed), p.verb, s.Files, humanBytes(s.Bytes))
	}
	if s.ScanDone && s.TotalBytes > 0 {
		pct := 100 * float64(s.Bytes) / float64(s.TotalBytes)
		fmt.Fprintf(&b, " / %s (%.0f%%)", humanBytes(s.TotalBytes), min(pct, 100))
		if rate > 0 && s.Bytes < s.TotalBytes {
			eta := time.Duration(float64(s.TotalBytes-s.Bytes) / rate * float64(time.Second))
			fmt.Fprintf(&b, " ETA %s", clock(eta))
		}
	}
	fmt.Fprintf(&b, " %s/s", humanBytes(uint64(rate)))
	if s.Errors > 0 {
		fmt.Fprintf(&b, " %d errors", s.Errors)
	}
	line := b.String()
	if room := p.width - len(line) - 3; s.Current != "" && room > 10 {
		cur := safeText(s.Current) // a file name: the line is written raw
		if len(cur) > room {
			cur = "…" + cur[len(cur)-room+1:]
		}
		line += " " + cur
	}
	if len(line) > p.width-1 {
		line = line[:p.width-1]
	}
	p.mu.Lock()
	fmt.Fprintf(p.w, "\r\x1b[K%s", line)
	p.shown = true
	p.mu.Unlock()
}

// clear removes the line so that normal output starts on a clean line.
func (p *progressLine) clear() {
	if p == nil {
		return
	}
	p.mu.Lock()
	if p.shown {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.shown = false
	}
	p.mu.Unlock()
}

// printAbove writes a message without tearing the status line.
func (p *progressLine) printAbove(w io.Writer, format string, args ...any) {
	if p != nil {
		p.clear()
	}
	fmt.Fprintf(w, format, args...)
}

func (p *progressLine) fn() func(agent.Progress) {
	if p == nil {
		return nil
	}
	return p.update
}

func clock(d time.Duration) string {
	d = d.Round(time.Second)
	h, m, s := int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60
	if h > 0 {
		return fmt.Sprintf("%d:%02d:%02d", h, m, s)
	}
	return fmt.Sprintf("%d:%02d", m, s)
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
