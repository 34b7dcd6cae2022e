package client

import (
	"context"
	"io"
	"net/http"

	"golang.org/x/time/rate"
)

// limiter is a token bucket of bytes per second shared by every request
// of a client in one direction, so that the limit holds for the sum of
// the concurrent uploads (or downloads).
type limiter struct {
	lim   *rate.Limiter
	burst int
}

// newLimiter returns a limiter of bps bytes per second; nil for 0 (no
// limit).
func newLimiter(bps int64) *limiter {
	if bps <= 0 {
		return nil
	}
	// The bucket holds an eighth of a second's bytes (at most 256 KiB):
	// small enough that a transfer cannot run ahead of the limit for
	// long, large enough that a fast link is not throttled per packet.
	burst := int(min(max(bps/8, 1), 256<<10))
	return &limiter{lim: rate.NewLimiter(rate.Limit(bps), burst), burst: burst}
}

// reader takes tokens for every byte read through it.
type limitedReader struct {
	ctx context.Context
	r   io.Reader
	l   *limiter
}

func (r *limitedReader) Read(p []byte) (int, error) {
	if len(p) > r.l.burst {
		p = p[:r.l.burst]
	}
	n, err := r.r.Read(p)
	if n > 0 {
		if werr := r.l.lim.WaitN(r.ctx, n); werr != nil && err == nil {
			err = werr // the request's context ended while waiting
		}
	}
	return n, err
}

type limitedReadCloser struct {
	limitedReader
	c io.Closer
}

func (r *limitedReadCloser) Close() error { return r.c.Close() }

func limitBody(ctx context.Context, rc io.ReadCloser, l *limiter) io.ReadCloser {
	return &limitedReadCloser{limitedReader{ctx: ctx, r: rc, l: l}, rc}
}

// limitTransport paces request bodies (uploads) and response bodies
// (downloads) through their limiters; either may be nil.
type limitTransport struct {
	next     http.RoundTripper
	up, down *limiter
}

func (t *limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.up != nil && req.Body != nil && req.Body != http.NoBody {
		r := req.Clone(req.Context()) // a RoundTripper must not change the caller's request
		r.Body = limitBody(req.Context(), req.Body, t.up)
		if req.GetBody != nil {
			get := req.GetBody
			r.GetBody = func() (io.ReadCloser, error) {
				b, err := get()
				if err != nil {
					return nil, err
				}
				return limitBody(req.Context(), b, t.up), nil
			}
		}
		req = r
	}
	resp, err := t.next.RoundTrip(req)
	if err == nil && t.down != nil && resp.Body != nil {
		resp.Body = limitBody(req.Context(), resp.Body, t.down)
	}
	return resp, err
}

// CloseIdleConnections lets Client.Close reach the transport.
func (t *limitTransport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
