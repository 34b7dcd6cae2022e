package srcvol

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// mount is one line of /proc/self/mountinfo (proc(5)).
type mount struct {
	major, minor int
	root         string // the mounted subtree of the file system (a bind mount's source)
	point        string
	fstype       string
	source       string
	superOpts    string
}

// maxMountinfo bounds what is read of the mount table.
const maxMountinfo = 16 << 20

// readMounts parses the mount table under proc.
func readMounts(proc string) ([]mount, error) {
	b, err := readBounded(proc+"/self/mountinfo", maxMountinfo)
	if err != nil {
		return nil, err
	}
	var out []mount
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m, err := parseMountLine(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("%s/self/mountinfo: %w", proc, err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s/self/mountinfo: %w", proc, err)
	}
	return out, nil
}

// parseMountLine reads "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3
// /dev/root rw,errors=continue".
func parseMountLine(line string) (mount, error) {
	var m mount
	f := strings.Fields(line)
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || sep+1 >= len(f) {
		return m, fmt.Errorf("malformed line %q", line)
	}
	maj, min, ok := strings.Cut(f[2], ":")
	var err1, err2 error
	m.major, err1 = strconv.Atoi(maj)
	m.minor, err2 = strconv.Atoi(min)
	if !ok || err1 != nil || err2 != nil {
		return m, fmt.Errorf("malformed device %q", f[2])
	}
	m.root, m.point = unescape(f[3]), unescape(f[4])
	m.fstype = unescape(f[sep+1])
	if sep+2 < len(f) {
		m.source = unescape(f[sep+2])
	}
	if sep+3 < len(f) {
		m.superOpts = f[sep+3]
	}
	return m, nil
}

// unescape undoes the octal escapes (\040 for a space) of mountinfo.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// findMount returns the mount that holds path (absolute, resolved): the
// longest mount point that is path or an ancestor of it; of mounts on the
// same point the last, which hides the ones before.
func findMount(ms []mount, path string) (mount, bool) {
	best, found := mount{}, false
	for _, m := range ms {
		if !within(path, m.point) {
			continue
		}
		if !found || len(m.point) >= len(best.point) {
			best, found = m, true
		}
	}
	return best, found
}

func within(path, dir string) bool {
	return dir == "/" || path == dir || strings.HasPrefix(path, dir+"/")
}

// superOpt returns the value of option name in a mount's super options
// (comma-separated; a value may escape commas as "\,").
func superOpt(opts, name string) (string, bool) {
	var parts []string
	cur := strings.Builder{}
	for i := 0; i < len(opts); i++ {
		switch {
		case opts[i] == '\\' && i+1 < len(opts):
			cur.WriteByte(opts[i+1])
			i++
		case opts[i] == ',':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(opts[i])
		}
	}
	parts = append(parts, cur.String())
	for _, p := range parts {
		if v, ok := strings.CutPrefix(p, name+"="); ok {
			return unescape(v), true
		}
	}
	return "", false
}

func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: more than %d bytes", path, max)
	}
	return b, nil
}
