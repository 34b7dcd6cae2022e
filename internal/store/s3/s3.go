// Package s3 is a vault.Store in an S3-compatible bucket (AWS S3,
// versitygw, MinIO, Ceph RGW, …), under an optional key prefix.
//
// Layout, below the prefix:
//
//	config
//	keys/<name>
//	snapshots/<name>
//	packs/<name>
//
// Write-once: every Put is a conditional write (If-None-Match: *), so of
// two writers of one name exactly one wins and the other gets
// vault.ErrExists. Objects up to PartSize bytes are sent in one PUT, larger
// ones as a multipart upload completed with the same condition; either way
// nothing is visible before the whole object is. Every body sent carries a
// CRC32C checksum (x-amz-checksum-crc32c) that the server checks before it
// stores anything; over https the body itself is not hashed for the
// signature (UNSIGNED-PAYLOAD: TLS protects it in transit), over plain
// http it is (SigV4 signs its SHA-256). Every request is retried
// with capped exponential backoff and full jitter on 5xx, throttling (503
// SlowDown, 429) and timeouts, and never on another 4xx.
//
// Versioned buckets (needed for Object Lock): a plain DELETE only adds a
// delete marker and an overwrite only adds a version, so the store reads
// the OLDEST version of every name, the one the first writer wrote, and
// lists by versions. Someone holding the bucket's credentials therefore
// cannot hide an object behind a delete marker or replace it with a newer
// version; under Object Lock they cannot remove the oldest version either
// (see Retain). A Put of a key or the config checks after writing that its
// version is the oldest, so a version planted earlier and hidden behind a
// delete marker wins over it (the Put fails with vault.ErrExists) instead
// of silently shadowing it. Delete removes every version of a name.
package s3

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/coffer-backup/coffer/internal/store"
	"github.com/coffer-backup/coffer/internal/tlsconf"
	"github.com/coffer-backup/coffer/internal/vault"
)

var _ vault.Store = (*Store)(nil)

// Defaults for Options' zero values.
const (
	DefaultPartSize       = 16 << 20 // a pack (format.PackTargetSize) usually fits one PUT
	DefaultMaxAttempts    = 6
	DefaultMaxBackoff     = 20 * time.Second
	DefaultAttemptTimeout = 2 * time.Minute
	minPartSize           = 5 << 20 // S3's minimum for every part but the last
	maxParts              = 10000   // S3's maximum part count
	maxVersionPages       = 1000    // bounds the versions read for one name
	maxCachedVersions     = 1 << 16 // bounds the oldest-version cache
)

// Options configure a Store.
type Options struct {
	Bucket string
	Prefix string // key prefix without leading or trailing slash; "" for the bucket's root
	// Endpoint is the S3 endpoint's base URL (https://s3.example:9000);
	// empty for AWS.
	Endpoint  string
	Region    string // empty: from the AWS configuration, else us-east-1
	PathStyle bool   // bucket in the path, not the host name (most non-AWS servers)
	CAFile    string // PEM certificates to trust for the endpoint, besides the system's

	// Credentials, when nil, come from the standard AWS chain: the
	// environment (AWS_ACCESS_KEY_ID…), the shared files (~/.aws), web
	// identity, the ECS and EC2 instance roles.
	Credentials aws.CredentialsProvider

	PartSize       int64         // objects larger than this are uploaded in parts of this size
	MaxAttempts    int           // attempts per request, first included
	MaxBackoff     time.Duration // cap of the jittered exponential backoff
	AttemptTimeout time.Duration // how long one attempt may wait for the response headers

	// HTTPClient, when set (by tests), replaces the client built from
	// CAFile and AttemptTimeout.
	HTTPClient *http.Client
}

// ParseURL parses s3://bucket/prefix?endpoint=URL&region=R&path-style=true&ca-file=PATH.
// Credentials never travel in the URL (it is shown and logged): they come
// from the standard AWS chain.
func ParseURL(raw string) (Options, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Options{}, fmt.Errorf("s3 store URL: %w", err)
	}
	if u.Scheme != "s3" {
		return Options{}, fmt.Errorf("s3 store URL %q: want s3://bucket/prefix", raw)
	}
	if u.User != nil {
		return Options{}, errors.New("s3 store URL: credentials do not belong in the URL: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a shared credentials file or an instance role")
	}
	if u.Host == "" {
		return Options{}, fmt.Errorf("s3 store URL %q: no bucket: want s3://bucket/prefix", raw)
	}
	opt := Options{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/")}
	for k, vs := range u.Query() {
		v := vs[len(vs)-1]
		switch k {
		case "endpoint":
			e, err := url.Parse(v)
			if err == nil && e.User != nil {
				return Options{}, errors.New("s3 store URL: endpoint: credentials do not belong in the URL: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a shared credentials file or an instance role")
			}
			if err != nil || (e.Scheme != "https" && e.Scheme != "http") || e.Host == "" {
				return Options{}, fmt.Errorf("s3 store URL: endpoint %q: want https://host[:port]", v)
			}
			opt.Endpoint = v
		case "region":
			opt.Region = v
		case "path-style":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return Options{}, fmt.Errorf("s3 store URL: path-style=%q: want true or false", v)
			}
			opt.PathStyle = b
		case "ca-file":
			opt.CAFile = v
		default:
			return Options{}, fmt.Errorf("s3 store URL: unknown parameter %q (known: endpoint, region, path-style, ca-file)", k)
		}
	}
	if opt.Endpoint != "" && !strings.Contains(raw, "path-style=") {
		opt.PathStyle = true // what non-AWS endpoints expect
	}
	if err := checkPrefix(opt.Prefix); err != nil {
		return Options{}, err
	}
	return opt, nil
}

func checkPrefix(p string) error {
	for _, seg := range strings.Split(p, "/") {
		if p != "" && (seg == "" || seg == "." || seg == "..") {
			return fmt.Errorf("s3 store: prefix %q has an empty, \".\" or \"..\" segment", p)
		}
	}
	return nil
}

// Store is a vault.Store in an S3 bucket, safe for concurrent use.
type Store struct {
	c         *s3.Client
	http      *http.Client
	bucket    string
	prefix    string // "" or ends with "/"
	partSize  int64
	versioned bool // the bucket keeps versions: read the oldest
	objLock   bool // the bucket has Object Lock enabled

	// retain, when set, gives the Object Lock retention for a new object
	// (see SetRetention).
	retainMu sync.RWMutex
	retain   func(context.Context, vault.Handle) (time.Time, error)

	mu       sync.Mutex
	versions map[string]version // key → its oldest version, when known

	// tls: the endpoint is https, so bodies go unsigned (see bodyOpts).
	tls bool
	// bufs holds *[]byte of partSize: the bodies being sent (a pack is
	// copied out of the caller's reader so that its buffer is free for
	// the next one while this one is sent, and a retry can resend it).
	bufs sync.Pool
}

// bodyOpts are the per-request options of a request with a body whose
// CRC32C (crc32c) it carries: over https the body's SHA-256 is left out of
// the signature (UNSIGNED-PAYLOAD, the SDK's own default over TLS): TLS
// protects the body in transit and the CRC32C, which the server checks
// before it stores anything, against damage; hashing each body once more
// only for the signature costs both ends a pass over every byte. Over
// plain http nothing else protects the body against a change on the way,
// so there its SHA-256 is signed as before.
func (s *Store) bodyOpts() []func(*s3.Options) {
	if !s.tls {
		return nil
	}
	return []func(*s3.Options){s3.WithAPIOptions(v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)}
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c is b's CRC32C as S3's x-amz-checksum-crc32c wants it: base64 of
// the big-endian 4 bytes.
func crc32c(b []byte) *string {
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc32.Checksum(b, castagnoli))
	return aws.String(base64.StdEncoding.EncodeToString(sum[:]))
}

// version is one stored version of a key.
type version struct {
	id    string // "" on an unversioned bucket
	size  int64
	until time.Time // its retention ends, as far as this store knows; zero if unknown
}

// Open connects to the bucket, which must exist, and learns whether it
// keeps versions.
func Open(ctx context.Context, opt Options) (*Store, error) {
	s, err := open(ctx, opt)
	if err != nil {
		return nil, fmt.Errorf("open s3 store %s: %w", opt.Bucket, err)
	}
	return s, nil
}

func open(ctx context.Context, opt Options) (*Store, error) {
	if opt.Bucket == "" {
		return nil, errors.New("no bucket")
	}
	prefix := strings.Trim(opt.Prefix, "/")
	if err := checkPrefix(prefix); err != nil {
		return nil, err
	}
	if prefix != "" {
		prefix += "/"
	}
	if opt.PartSize == 0 {
		opt.PartSize = DefaultPartSize
	}
	if opt.PartSize < minPartSize {
		return nil, fmt.Errorf("part size %d is below S3's minimum of %d", opt.PartSize, minPartSize)
	}
	if opt.MaxAttempts <= 0 {
		opt.MaxAttempts = DefaultMaxAttempts
	}
	if opt.MaxBackoff <= 0 {
		opt.MaxBackoff = DefaultMaxBackoff
	}
	if opt.AttemptTimeout <= 0 {
		opt.AttemptTimeout = DefaultAttemptTimeout
	}
	hc := opt.HTTPClient
	if hc == nil {
		var err error
		if hc, err = httpClient(opt); err != nil {
			return nil, err
		}
	}
	loads := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer { return NewRetryer(opt.MaxAttempts, opt.MaxBackoff) }),
	}
	if opt.Region != "" {
		loads = append(loads, config.WithRegion(opt.Region))
	}
	if opt.Credentials != nil {
		loads = append(loads, config.WithCredentialsProvider(opt.Credentials))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loads...)
	if err != nil {
		return nil, fmt.Errorf("load the AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	c := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if opt.Endpoint != "" {
			o.BaseEndpoint = aws.String(opt.Endpoint)
		}
		o.UsePathStyle = opt.PathStyle
		o.HTTPClient = hc
		// No checksums computed by the SDK: S3-compatible servers differ in
		// the trailing checksums it would otherwise send, and over plain
		// http it would hash every body twice (its CRC, then SHA-256 for
		// the signature). The store sends a CRC32C header of its own on
		// every body (put, putPart), which every server checks. Every
		// object is authenticated by Coffer's own format besides.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	s := &Store{c: c, http: hc, bucket: opt.Bucket, prefix: prefix, partSize: opt.PartSize, versions: make(map[string]version),
		// AWS's own endpoints are https.
		tls: opt.Endpoint == "" || strings.HasPrefix(strings.ToLower(opt.Endpoint), "https://")}
	s.bufs.New = func() any { b := make([]byte, s.partSize); return &b }
	vs, err := c.GetBucketVersioning(ctx, &s3.GetBucketVersioningInput{Bucket: aws.String(opt.Bucket)})
	if err != nil {
		return nil, fmt.Errorf("read the bucket's versioning (does bucket %s exist, and may these credentials read it?): %w", opt.Bucket, err)
	}
	// Suspended still leaves older versions behind.
	s.versioned = vs.Status == types.BucketVersioningStatusEnabled || vs.Status == types.BucketVersioningStatusSuspended
	if s.versioned {
		lc, err := c.GetObjectLockConfiguration(ctx, &s3.GetObjectLockConfigurationInput{Bucket: aws.String(opt.Bucket)})
		switch {
		case err == nil:
			s.objLock = lc.ObjectLockConfiguration != nil && lc.ObjectLockConfiguration.ObjectLockEnabled == types.ObjectLockEnabledEnabled
		case status(err) == http.StatusNotFound || code(err) == "ObjectLockConfigurationNotFoundError":
		default:
			return nil, fmt.Errorf("read the bucket's Object Lock configuration: %w", err)
		}
	}
	return s, nil
}

func httpClient(opt Options) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 32
	tr.ResponseHeaderTimeout = opt.AttemptTimeout
	tr.DialContext = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if opt.CAFile != "" {
		pem, err := os.ReadFile(opt.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read the endpoint's CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", opt.CAFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	// Packs are 16 MiB bodies: over https their TLS records go to the
	// kernel 16 at a time instead of one by one
	// (tlsconf.CoalescingDialer). Through a proxy, or over plain http, the
	// transport dials as before.
	if u, err := url.Parse(opt.Endpoint); opt.Endpoint == "" || (err == nil && strings.EqualFold(u.Scheme, "https")) {
		target := &url.URL{Scheme: "https", Host: "s3.amazonaws.com"}
		if opt.Endpoint != "" {
			target = u
		}
		if pu, err := proxyFor(tr, target); err == nil && pu == nil {
			tr.DialTLSContext = tlsconf.CoalescingDialer(tr.DialContext, tr.TLSClientConfig, tr.TLSHandshakeTimeout)
		}
	}
	return &http.Client{Transport: tr}, nil
}

func proxyFor(tr *http.Transport, u *url.URL) (*url.URL, error) {
	if tr.Proxy == nil {
		return nil, nil
	}
	return tr.Proxy(&http.Request{URL: u})
}

// NewRetryer is the store's retry policy: up to maxAttempts attempts
// with capped exponential backoff and full jitter, on 5xx, throttling
// (SlowDown, 429 and the other throttle codes), timeouts and broken
// connections; never on another 4xx, nor once the caller's context is
// done. No retry budget: a backup waits out a long outage rather than
// failing after a fixed number of errors across requests.
func NewRetryer(maxAttempts int, maxBackoff time.Duration) aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = maxAttempts
		o.MaxBackoff = maxBackoff
		o.Backoff = retry.NewExponentialJitterBackoff(maxBackoff)
		o.RateLimiter = ratelimit.None
		o.Retryables = []retry.IsErrorRetryable{
			retry.NoRetryCanceledError{},
			retry.RetryableError{},
			retry.RetryableConnectionError{},
			retry.RetryableHTTPStatusCode{Codes: map[int]struct{}{
				http.StatusInternalServerError: {}, http.StatusBadGateway: {},
				http.StatusServiceUnavailable: {}, http.StatusGatewayTimeout: {},
				http.StatusTooManyRequests: {},
			}},
			retry.RetryableErrorCode{Codes: retry.DefaultRetryableErrorCodes},
			retry.RetryableErrorCode{Codes: retry.DefaultThrottleErrorCodes},
		}
	})
}

// Versioned reports whether the bucket keeps object versions.
func (s *Store) Versioned() bool { return s.versioned }

func (s *Store) key(h vault.Handle) (string, error) {
	if err := store.CheckHandle(h); err != nil {
		return "", err
	}
	if h.Type == vault.ConfigObject {
		return s.prefix + "config", nil
	}
	return s.prefix + string(h.Type) + "/" + h.Name, nil
}

// Put stores size bytes read from rd under h; see the package
// documentation. If h exists Put fails with vault.ErrExists.
func (s *Store) Put(ctx context.Context, h vault.Handle, rd io.Reader, size int64) error {
	if err := s.put(ctx, h, rd, size); err != nil {
		return fmt.Errorf("put %s: %w", h, err)
	}
	return nil
}

func (s *Store) put(ctx context.Context, h vault.Handle, rd io.Reader, size int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	key, err := s.key(h)
	if err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("negative size %d", size)
	}
	if (size+s.partSize-1)/s.partSize > maxParts {
		return fmt.Errorf("object of %d bytes needs more than %d parts", size, maxParts)
	}
	src := &exactReader{ctx: ctx, r: rd, left: size}
	lock, err := s.retention(ctx, h)
	if err != nil {
		return fmt.Errorf("decide its retention: %w", err)
	}
	var vid string
	if size <= s.partSize {
		vid, err = s.putSingle(ctx, key, src, size, lock)
	} else {
		vid, err = s.putMultipart(ctx, key, src, size, lock)
	}
	if err != nil {
		return err
	}
	if s.versioned && (h.Type == vault.KeyObject || h.Type == vault.ConfigObject) {
		// Pack and snapshot names are random and never reused; key and
		// config names are predictable, so someone with the bucket's
		// credentials may have planted a version and hidden it behind a
		// delete marker, which If-None-Match does not see.
		old, err := s.resolve(ctx, key)
		if err != nil {
			return fmt.Errorf("check the version written: %w", err)
		}
		if old.id != vid {
			s.dropVersion(context.WithoutCancel(ctx), key, vid)
			return vault.ErrExists
		}
	}
	s.remember(key, version{id: vid, size: size, until: lock})
	return nil
}

// retention is the Object Lock retention for a new object, zero for none.
func (s *Store) retention(ctx context.Context, h vault.Handle) (time.Time, error) {
	s.retainMu.RLock()
	fn := s.retain
	s.retainMu.RUnlock()
	if fn == nil {
		return time.Time{}, nil
	}
	until, err := fn(ctx, h)
	if err == nil && !until.IsZero() && !s.objLock {
		err = fmt.Errorf("bucket %s has no Object Lock: create the bucket with Object Lock enabled to keep a locked vault in it", s.bucket)
	}
	return until, err
}

// ObjectLock reports whether the bucket has Object Lock enabled, so that
// SetRetention and Retain can work.
func (s *Store) ObjectLock() bool { return s.objLock }

// SetRetention sets the function that gives each new object's Object
// Lock retention: COMPLIANCE mode until the time it returns, none for the
// zero time. An error from it fails the Put: a locked vault never gets an
// unprotected object.
func (s *Store) SetRetention(fn func(context.Context, vault.Handle) (time.Time, error)) {
	s.retainMu.Lock()
	defer s.retainMu.Unlock()
	s.retain = fn
}

// RetainedUntil returns when the Object Lock retention of h (the version
// the store reads) ends; the zero time when it has none.
func (s *Store) RetainedUntil(ctx context.Context, h vault.Handle) (time.Time, error) {
	key, err := s.key(h)
	if err != nil {
		return time.Time{}, fmt.Errorf("retention of %s: %w", h, err)
	}
	until, err := s.retainedUntil(ctx, key)
	if err != nil {
		return time.Time{}, fmt.Errorf("retention of %s: %w", h, err)
	}
	return until, nil
}

func (s *Store) retainedUntil(ctx context.Context, key string) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	if !s.objLock {
		return time.Time{}, nil
	}
	v, err := s.lookup(ctx, key)
	if err != nil {
		return time.Time{}, err
	}
	in := &s3.HeadObjectInput{Bucket: &s.bucket, Key: &key}
	if v.id != "" {
		in.VersionId = aws.String(v.id)
	}
	out, err := s.c.HeadObject(ctx, in)
	if err != nil {
		return time.Time{}, notFound(err)
	}
	if out.ObjectLockMode != types.ObjectLockModeCompliance {
		return time.Time{}, nil // GOVERNANCE can be bypassed: it does not count
	}
	return aws.ToTime(out.ObjectLockRetainUntilDate), nil
}

// Retain makes sure h (the version the store reads) is retained in
// COMPLIANCE mode until atLeast: if its retention ends earlier, it is set
// to until (at or after atLeast; a later until spares requests on the next
// calls). COMPLIANCE retention can be lengthened, never shortened, by
// anyone, Coffer included.
func (s *Store) Retain(ctx context.Context, h vault.Handle, atLeast, until time.Time) error {
	if err := s.retainObject(ctx, h, atLeast, until); err != nil {
		return fmt.Errorf("retain %s: %w", h, err)
	}
	return nil
}

func (s *Store) retainObject(ctx context.Context, h vault.Handle, atLeast, until time.Time) error {
	key, err := s.key(h)
	if err != nil {
		return err
	}
	if !s.objLock {
		return fmt.Errorf("bucket %s has no Object Lock", s.bucket)
	}
	if until.Before(atLeast) {
		until = atLeast
	}
	s.mu.Lock()
	cached, ok := s.versions[key]
	s.mu.Unlock()
	if ok && !cached.until.Before(atLeast) {
		return nil
	}
	cur, err := s.retainedUntil(ctx, key)
	if err != nil {
		return err
	}
	v, err := s.lookup(ctx, key)
	if err != nil {
		return err
	}
	if cur.Before(atLeast) {
		in := &s3.PutObjectRetentionInput{Bucket: &s.bucket, Key: &key,
			Retention: &types.ObjectLockRetention{Mode: types.ObjectLockRetentionModeCompliance, RetainUntilDate: aws.Time(until)}}
		if v.id != "" {
			in.VersionId = aws.String(v.id)
		}
		if _, err := s.c.PutObjectRetention(ctx, in); err != nil {
			return err
		}
		cur = until
	}
	v.until = cur
	s.remember(key, v)
	return nil
}

// dropVersion removes a version this store wrote and lost with; a locked
// one stays, harmless: reads take the oldest.
func (s *Store) dropVersion(ctx context.Context, key, vid string) {
	if vid == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, _ = s.c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &key, VersionId: &vid})
}

// pooledMin: smaller bodies (keyrings, snapshots, trees) are allocated.
const pooledMin = 1 << 20

// buffer returns a buffer of n bytes (at most partSize) and its release.
func (s *Store) buffer(n int64) ([]byte, func()) {
	if n < pooledMin {
		return make([]byte, n), func() {}
	}
	bp := s.bufs.Get().(*[]byte)
	return (*bp)[:n], func() { s.bufs.Put(bp) }
}

// body is a request body over a pooled buffer. The HTTP transport may
// still be reading a body when the response has come (a server that
// answers before reading it all): once the request is over, close makes
// every later read fail, so that the buffer can go back to the pool.
type body struct {
	mu     sync.Mutex
	r      bytes.Reader
	closed bool
}

func newBody(b []byte) *body {
	bd := &body{}
	bd.r.Reset(b)
	return bd
}

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, errors.New("request body read after the request ended")
	}
	return b.r.Read(p)
}

func (b *body) Seek(off int64, whence int) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.r.Seek(off, whence)
}

// close ends reading; the buffer is the caller's again.
func (b *body) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}

func (s *Store) putSingle(ctx context.Context, key string, src *exactReader, size int64, lock time.Time) (string, error) {
	buf, release := s.buffer(size)
	defer release()
	if err := src.fill(buf); err != nil {
		return "", err
	}
	if err := src.finish(); err != nil {
		return "", err
	}
	bd := newBody(buf)
	defer bd.close() // before release
	in := &s3.PutObjectInput{
		Bucket:        &s.bucket,
		Key:           &key,
		Body:          bd,
		ContentLength: aws.Int64(size),
		IfNoneMatch:   aws.String("*"), // write-once, decided by the server
		// Checked by the server before it stores the object; S3 also
		// wants a checksum with a retention.
		ChecksumCRC32C: crc32c(buf),
	}
	if !lock.IsZero() {
		in.ObjectLockMode = types.ObjectLockModeCompliance
		in.ObjectLockRetainUntilDate = aws.Time(lock)
	}
	out, err := s.c.PutObject(ctx, in, s.bodyOpts()...)
	if err != nil {
		return "", putErr(err)
	}
	return aws.ToString(out.VersionId), nil
}

func (s *Store) putMultipart(ctx context.Context, key string, src *exactReader, size int64, lock time.Time) (string, error) {
	// Every part carries its CRC32C, checked by the server as it arrives.
	in := &s3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: &key, ChecksumAlgorithm: types.ChecksumAlgorithmCrc32c}
	if !lock.IsZero() {
		in.ObjectLockMode = types.ObjectLockModeCompliance
		in.ObjectLockRetainUntilDate = aws.Time(lock)
	}
	up, err := s.c.CreateMultipartUpload(ctx, in)
	if err != nil {
		return "", err
	}
	done := false
	defer func() {
		if !done {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			_, _ = s.c.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: &key, UploadId: up.UploadId})
		}
	}()
	buf, release := s.buffer(s.partSize)
	defer release()
	var parts []types.CompletedPart
	for n, left := int32(1), size; left > 0; n++ {
		part := buf[:min(left, s.partSize)]
		if err := src.fill(part); err != nil {
			return "", err
		}
		left -= int64(len(part))
		if left == 0 {
			if err := src.finish(); err != nil {
				return "", err
			}
		}
		bd := newBody(part)
		pin := &s3.UploadPartInput{
			Bucket: &s.bucket, Key: &key, UploadId: up.UploadId, PartNumber: aws.Int32(n),
			Body: bd, ContentLength: aws.Int64(int64(len(part))),
			ChecksumCRC32C: crc32c(part),
		}
		out, err := s.c.UploadPart(ctx, pin, s.bodyOpts()...)
		bd.close() // the next part refills the buffer
		if err != nil {
			return "", err
		}
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(n), ChecksumCRC32C: pin.ChecksumCRC32C})
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	out, err := s.c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &s.bucket, Key: &key, UploadId: up.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
		IfNoneMatch:     aws.String("*"),
	})
	if err != nil {
		return "", putErr(err)
	}
	done = true
	return aws.ToString(out.VersionId), nil
}

// putErr maps a lost conditional write to vault.ErrExists.
func putErr(err error) error {
	switch status(err) {
	case http.StatusPreconditionFailed:
		return fmt.Errorf("%w (%v)", vault.ErrExists, err)
	case http.StatusConflict:
		// ConditionalRequestConflict: a concurrent conditional write of
		// the same key is in progress; it or another writer wins.
		if code(err) == "ConditionalRequestConflict" {
			return fmt.Errorf("%w (%v)", vault.ErrExists, err)
		}
	}
	return err
}

// exactReader yields exactly left bytes of r and checks ctx before every
// read: a shorter or longer source, or a cancelled context, fails.
type exactReader struct {
	ctx  context.Context
	r    io.Reader
	left int64
}

// fill reads len(p) bytes.
func (e *exactReader) fill(p []byte) error {
	for len(p) > 0 {
		if err := e.ctx.Err(); err != nil {
			return err
		}
		n, err := e.r.Read(p)
		p = p[n:]
		e.left -= int64(n)
		if len(p) == 0 {
			break
		}
		if err == io.EOF {
			return fmt.Errorf("reader ended %d bytes early: %w", int64(len(p))+e.left, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// finish checks that the source holds nothing more and ctx is live.
func (e *exactReader) finish() error {
	var one [1]byte
	for i := 0; ; i++ {
		if err := e.ctx.Err(); err != nil {
			return err
		}
		n, err := e.r.Read(one[:])
		if n > 0 {
			return errors.New("reader holds more bytes than the size given")
		}
		if err == io.EOF {
			return e.ctx.Err()
		}
		if err != nil {
			return err
		}
		if i > 100 {
			return errors.New("reader returns neither data nor EOF")
		}
	}
}

// Get returns length bytes of h starting at offset; length < 0 means to
// the end. A range past the end yields fewer bytes.
func (s *Store) Get(ctx context.Context, h vault.Handle, offset, length int64) (io.ReadCloser, error) {
	rc, err := s.get(ctx, h, offset, length)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", h, err)
	}
	return rc, nil
}

func (s *Store) get(ctx context.Context, h vault.Handle, offset, length int64) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	key, err := s.key(h)
	if err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("negative offset %d", offset)
	}
	for try := 0; ; try++ {
		v, err := s.lookup(ctx, key)
		if err != nil {
			return nil, err
		}
		if length == 0 || offset >= v.size {
			return io.NopCloser(bytes.NewReader(nil)), nil
		}
		in := &s3.GetObjectInput{Bucket: &s.bucket, Key: &key}
		if v.id != "" {
			in.VersionId = aws.String(v.id)
		}
		if offset > 0 || length > 0 {
			r := fmt.Sprintf("bytes=%d-", offset)
			if length > 0 && length <= math.MaxInt64-offset {
				r += strconv.FormatInt(offset+length-1, 10)
			}
			in.Range = &r
		}
		out, err := s.c.GetObject(ctx, in)
		if err == nil {
			return out.Body, nil
		}
		if status(err) == http.StatusRequestedRangeNotSatisfiable {
			return io.NopCloser(bytes.NewReader(nil)), nil
		}
		if isNotFound(err) && try == 0 && s.forget(key) {
			continue // a cached version deleted since: look again
		}
		return nil, notFound(err)
	}
}

// Stat returns the size of h.
func (s *Store) Stat(ctx context.Context, h vault.Handle) (vault.ObjectInfo, error) {
	if err := ctx.Err(); err != nil {
		return vault.ObjectInfo{}, fmt.Errorf("stat %s: %w", h, err)
	}
	key, err := s.key(h)
	if err != nil {
		return vault.ObjectInfo{}, fmt.Errorf("stat %s: %w", h, err)
	}
	s.forget(key) // Stat answers from the bucket, never the cache
	v, err := s.lookup(ctx, key)
	if err != nil {
		return vault.ObjectInfo{}, fmt.Errorf("stat %s: %w", h, err)
	}
	return vault.ObjectInfo{Handle: h, Size: v.size}, nil
}

// lookup returns the version of key to read: the cached one, else the
// oldest (versioned bucket) or the only one.
func (s *Store) lookup(ctx context.Context, key string) (version, error) {
	s.mu.Lock()
	v, ok := s.versions[key]
	s.mu.Unlock()
	if ok {
		return v, nil
	}
	v, err := s.resolve(ctx, key)
	if err != nil {
		return version{}, err
	}
	s.remember(key, v)
	return v, nil
}

// resolve asks the bucket for key's oldest version.
func (s *Store) resolve(ctx context.Context, key string) (version, error) {
	if !s.versioned {
		out, err := s.c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: &key})
		if err != nil {
			return version{}, notFound(err)
		}
		return version{size: aws.ToInt64(out.ContentLength)}, nil
	}
	vs, err := s.allVersions(ctx, key)
	if err != nil {
		return version{}, err
	}
	for i := len(vs) - 1; i >= 0; i-- { // newest first: the oldest is last
		if !vs[i].marker {
			return vs[i].version, nil
		}
	}
	return version{}, vault.ErrNotFound
}

type anyVersion struct {
	version
	marker bool // a delete marker
}

// allVersions lists every version and delete marker of key exactly, newest
// first, as S3 orders them.
func (s *Store) allVersions(ctx context.Context, key string) ([]anyVersion, error) {
	var vs []anyVersion
	in := &s3.ListObjectVersionsInput{Bucket: &s.bucket, Prefix: &key}
	for page := 0; ; page++ {
		if page == maxVersionPages {
			return nil, fmt.Errorf("%s has more than %d pages of versions", key, maxVersionPages)
		}
		out, err := s.c.ListObjectVersions(ctx, in)
		if err != nil {
			return nil, err
		}
		past := false
		for _, e := range mergeVersions(out) {
			switch {
			case e.key == key:
				vs = append(vs, e.v)
			case e.key > key:
				past = true
			}
		}
		if past || !aws.ToBool(out.IsTruncated) {
			return vs, nil
		}
		in.KeyMarker, in.VersionIdMarker = out.NextKeyMarker, out.NextVersionIdMarker
	}
}

type keyedVersion struct {
	key string
	v   anyVersion
}

// mergeVersions returns a page's versions and delete markers in S3's
// order: by key, newest first within a key. S3 returns the two kinds in
// separate lists.
func mergeVersions(out *s3.ListObjectVersionsOutput) []keyedVersion {
	all := make([]keyedVersion, 0, len(out.Versions)+len(out.DeleteMarkers))
	type timed struct {
		kv     keyedVersion
		t      time.Time
		latest bool
	}
	var ts []timed
	for _, v := range out.Versions {
		ts = append(ts, timed{keyedVersion{aws.ToString(v.Key), anyVersion{version{id: aws.ToString(v.VersionId), size: aws.ToInt64(v.Size)}, false}}, aws.ToTime(v.LastModified), aws.ToBool(v.IsLatest)})
	}
	for _, m := range out.DeleteMarkers {
		ts = append(ts, timed{keyedVersion{aws.ToString(m.Key), anyVersion{version{id: aws.ToString(m.VersionId)}, true}}, aws.ToTime(m.LastModified), aws.ToBool(m.IsLatest)})
	}
	// Stable merge: within one list S3's order stands; across the two,
	// by key, then the latest first, then the newer first.
	slices.SortStableFunc(ts, func(a, b timed) int {
		if c := strings.Compare(a.kv.key, b.kv.key); c != 0 {
			return c
		}
		if a.latest != b.latest {
			if a.latest {
				return -1
			}
			return 1
		}
		return b.t.Compare(a.t)
	})
	for _, t := range ts {
		all = append(all, t.kv)
	}
	return all
}

func (s *Store) remember(key string, v version) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.versions) >= maxCachedVersions {
		clear(s.versions) // bounded memory; the cache refills on use
	}
	s.versions[key] = v
}

// forget drops key from the cache and reports whether it was there.
func (s *Store) forget(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.versions[key]
	delete(s.versions, key)
	return ok
}

// List calls fn for every object of type t, in no set order. On a
// versioned bucket it reports every name that has a version, whatever
// delete markers lie on top, with its oldest version's size.
func (s *Store) List(ctx context.Context, t vault.ObjectType, fn func(vault.ObjectInfo) error) error {
	return store.List(ctx, t, fn, s.list)
}

func (s *Store) list(ctx context.Context, t vault.ObjectType, fn func(vault.ObjectInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var prefix string
	switch t {
	case vault.ConfigObject:
		prefix = s.prefix + "config"
	case vault.PackObject, vault.SnapshotObject, vault.KeyObject:
		prefix = s.prefix + string(t) + "/"
	default:
		return fmt.Errorf("%w: unknown object type %q", store.ErrInvalidHandle, t)
	}
	emit := func(key string, v version) error {
		var h vault.Handle
		if t == vault.ConfigObject {
			if key != prefix {
				return nil
			}
			h = vault.Handle{Type: t, Name: "config"}
		} else {
			h = vault.Handle{Type: t, Name: strings.TrimPrefix(key, prefix)}
		}
		if store.CheckHandle(h) != nil {
			return nil // not Coffer's: "dir/name", upper case…
		}
		s.remember(key, v)
		return fn(vault.ObjectInfo{Handle: h, Size: v.size})
	}
	if !s.versioned {
		p := s3.NewListObjectsV2Paginator(s.c, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: &prefix})
		for p.HasMorePages() {
			out, err := p.NextPage(ctx)
			if err != nil {
				return err
			}
			for _, o := range out.Contents {
				if err := emit(aws.ToString(o.Key), version{size: aws.ToInt64(o.Size)}); err != nil {
					return err
				}
			}
		}
		return nil
	}
	// Versions come by key, newest first: the last non-marker version
	// seen for a key is its oldest. A key's versions may span pages.
	var cur string
	var oldest *version
	flush := func() error {
		if oldest == nil {
			return nil
		}
		v := *oldest
		oldest = nil
		return emit(cur, v)
	}
	in := &s3.ListObjectVersionsInput{Bucket: &s.bucket, Prefix: &prefix}
	for {
		out, err := s.c.ListObjectVersions(ctx, in)
		if err != nil {
			return err
		}
		for _, e := range mergeVersions(out) {
			if e.key != cur {
				if err := flush(); err != nil {
					return err
				}
				cur = e.key
			}
			if !e.v.marker {
				v := e.v.version
				oldest = &v
			}
		}
		if !aws.ToBool(out.IsTruncated) {
			return flush()
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		in.KeyMarker, in.VersionIdMarker = out.NextKeyMarker, out.NextVersionIdMarker
	}
}

// Delete removes h: on a versioned bucket every version of it, newest
// first. A version under Object Lock retention is refused by the bucket;
// Delete then fails wrapping vault.ErrImmutable, having removed only
// newer versions.
func (s *Store) Delete(ctx context.Context, h vault.Handle) error {
	if err := s.delete(ctx, h); err != nil {
		return fmt.Errorf("delete %s: %w", h, err)
	}
	return nil
}

func (s *Store) delete(ctx context.Context, h vault.Handle) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	key, err := s.key(h)
	if err != nil {
		return err
	}
	s.forget(key)
	if !s.versioned {
		if _, err := s.c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: &key}); err != nil {
			return notFound(err)
		}
		_, err := s.c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &key})
		return err
	}
	vs, err := s.allVersions(ctx, key)
	if err != nil {
		return err
	}
	found := false
	for _, v := range vs {
		found = found || !v.marker
	}
	if !found {
		return vault.ErrNotFound
	}
	for _, v := range vs {
		_, err := s.c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &key, VersionId: aws.String(v.id)})
		if err != nil {
			if status(err) == http.StatusForbidden && !v.marker {
				return fmt.Errorf("%w: the bucket's Object Lock retains it (%v)", vault.ErrImmutable, err)
			}
			return err
		}
	}
	return nil
}

// Close releases the store's idle connections.
func (s *Store) Close() error {
	s.http.CloseIdleConnections()
	return nil
}

// status is the HTTP status of a failed request, 0 if there was none.
func status(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func isNotFound(err error) bool {
	switch code(err) {
	case "NoSuchBucket":
		return false // a configuration error, not a missing object
	case "NoSuchKey", "NotFound", "NoSuchVersion":
		return true
	}
	return status(err) == http.StatusNotFound
}

// notFound maps a missing object to vault.ErrNotFound.
func notFound(err error) error {
	if isNotFound(err) {
		return fmt.Errorf("%w (%v)", vault.ErrNotFound, err)
	}
	return err
}
