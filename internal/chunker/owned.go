package chunker

import (
	"errors"
	"io"
)

// Headroom is the number of free bytes an Owned chunker leaves in front of
// every chunk it hands out (room for a blob's encoding byte, so the chunk
// can be sealed where it lies).
const Headroom = 1

// ownedBlock is the largest single Read an Owned chunker issues. Small
// reads keep the tail that moves to the next chunk's buffer short.
const ownedBlock = 256 << 10

// Allocator provides the buffers an Owned chunker reads into. Alloc
// returns a slice of length n (contents arbitrary); Free takes back a
// buffer the chunker outgrew. Buffers handed out by Next belong to the
// caller, who gives them back to its allocator when done.
type Allocator interface {
	Alloc(n int) []byte
	Free(b []byte)
}

// Owned cuts a stream at exactly the same boundaries as Chunker, but hands
// each chunk out in a buffer of its own instead of a view into a shared
// window: the caller keeps it as long as it likes, and nobody copies the
// chunk. Only the bytes read past a boundary move to the next buffer.
type Owned struct {
	r            io.Reader
	gear         *[256]uint64
	p            Params
	maskS, maskL uint64
	alloc        Allocator
	window       int // capacity of a fresh buffer

	buf []byte // buf[:Headroom] free, buf[Headroom:end] read, not yet handed out
	end int
	eof bool
	err error
}

// NewOwned returns an Owned chunker over r. window is the size of a new
// chunk buffer; a chunk that outgrows it (rare when window is a few times
// Avg) is moved to a larger one.
func NewOwned(r io.Reader, gear *[256]uint64, p Params, a Allocator, window int) (*Owned, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if gear == nil || a == nil {
		return nil, errors.New("chunker: nil gear table or allocator")
	}
	window = min(max(window, Headroom+p.Min+ownedBlock), Headroom+p.Max+ownedBlock)
	o := &Owned{gear: gear, p: p, alloc: a, window: window}
	o.maskS, o.maskL = p.Masks()
	o.Reset(r)
	return o, nil
}

// Reset makes o chunk r from its start. Its buffer is taken from the
// allocator when it is first given a reader, so a chunker made ahead
// (NewOwned with a nil reader) holds none until it is used.
func (o *Owned) Reset(r io.Reader) {
	o.r = r
	if o.buf == nil && r != nil {
		o.buf = o.alloc.Alloc(o.window)
	}
	o.end = Headroom
	o.eof = false
	o.err = nil
}

// Close gives o's current buffer back to the allocator.
func (o *Owned) Close() {
	if o.buf != nil {
		o.alloc.Free(o.buf)
		o.buf = nil
	}
}

// Next returns the next chunk as buf[Headroom:], in a buffer the caller
// now owns (buf[:Headroom] is free for its use). It returns io.EOF after
// the last chunk.
func (o *Owned) Next() ([]byte, error) {
	if o.err != nil {
		return nil, o.err
	}
	i, h := o.p.Min-1, uint64(0)
	for {
		data := o.buf[Headroom:o.end]
		avail := len(data)
		if avail >= o.p.Max || o.eof {
			if avail == 0 {
				return nil, io.EOF
			}
			n := min(avail, o.p.Max)
			if n > i {
				if cut, _, _ := scan(o.gear, data[:n], i, h, o.p.Avg, o.maskS, o.maskL); cut > 0 {
					n = cut
				}
			}
			return o.handout(n), nil
		}
		if avail > i {
			var cut int
			cut, i, h = scan(o.gear, data, i, h, o.p.Avg, o.maskS, o.maskL)
			if cut > 0 {
				return o.handout(cut), nil
			}
		}
		if err := o.fill(); err != nil {
			o.err = err
			return nil, err
		}
	}
}

// handout gives away the current buffer holding a chunk of n bytes, moving
// the bytes after it to a new buffer.
func (o *Owned) handout(n int) []byte {
	out := o.buf[:Headroom+n] // with its full capacity: the caller owns it all
	tail := o.buf[Headroom+n : o.end]
	nb := o.alloc.Alloc(max(o.window, Headroom+len(tail)+ownedBlock))
	o.end = Headroom + copy(nb[Headroom:], tail)
	o.buf = nb
	return out
}

// fill issues one successful Read, first moving to a larger buffer when
// the current one has no room for a full read.
func (o *Owned) fill() error {
	if len(o.buf)-o.end < ownedBlock {
		// Here end-Headroom < Max, so the largest buffer always has room.
		nb := o.alloc.Alloc(min(2*len(o.buf), Headroom+o.p.Max+ownedBlock))
		copy(nb, o.buf[:o.end])
		o.alloc.Free(o.buf)
		o.buf = nb
	}
	dst := o.buf[o.end:min(len(o.buf), o.end+ownedBlock)]
	n, eof, err := readOnce(o.r, dst)
	o.end += n
	o.eof = eof
	return err
}
