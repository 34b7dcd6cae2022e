package s3_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/coffer-backup/coffer/internal/store/s3"
	"github.com/coffer-backup/coffer/internal/store/s3/s3test"
	"github.com/coffer-backup/coffer/internal/store/storetest"
	"github.com/coffer-backup/coffer/internal/vault"
)

func openStore(t testing.TB, sv *s3test.Server, bucket, prefix string) *s3.Store {
	t.Helper()
	st, err := s3.Open(context.Background(), s3.Options{
		Bucket: bucket, Prefix: prefix, Endpoint: sv.Endpoint, Region: "us-east-1", PathStyle: true,
		Credentials: sv.Credentials(), CAFile: sv.CAFile, PartSize: 5 << 20, MaxBackoff: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestConformance runs the store suite against versitygw, on a plain
// bucket and on an Object Lock bucket (versioned: reads go by version).
func TestConformance(t *testing.T) {
	sv := s3test.Start(t)
	for _, lock := range []bool{false, true} {
		name := "plain"
		if lock {
			name = "objectlock"
		}
		t.Run(name, func(t *testing.T) {
			bucket := sv.Bucket(t, lock)
			n := 0
			storetest.Run(t, func(t *testing.T) vault.Store {
				n++
				st := openStore(t, sv, bucket, "vaults/v"+strings.Repeat("x", n%3)+string(rune('a'+n%26))+"/"+t.Name())
				if st.Versioned() != lock {
					t.Fatalf("Versioned() = %v on a bucket with lock %v", st.Versioned(), lock)
				}
				return st
			})
		})
	}
}

func TestParseURL(t *testing.T) {
	good := map[string]s3.Options{
		"s3://b":      {Bucket: "b"},
		"s3://b/p/q/": {Bucket: "b", Prefix: "p/q"},
		"s3://b/p?region=eu-west-2&endpoint=https://s3.example:9000": {Bucket: "b", Prefix: "p", Region: "eu-west-2", Endpoint: "https://s3.example:9000", PathStyle: true},
		"s3://b/p?endpoint=https://s3.example&path-style=false":      {Bucket: "b", Prefix: "p", Endpoint: "https://s3.example"},
		"s3://b?ca-file=/etc/ca.pem":                                 {Bucket: "b", CAFile: "/etc/ca.pem"},
	}
	for raw, want := range good {
		got, err := s3.ParseURL(raw)
		if err != nil || got != want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", raw, got, err, want)
		}
	}
	for _, raw := range []string{
		"s3:///p", "http://b/p", "s3://KEY:hunter2@b/p", "s3://b/p?secret=x",
		"s3://b/p?endpoint=ftp://x", "s3://b/p?endpoint=https://", "s3://b/a/../c", "s3://b/a//c",
		"s3://b?path-style=maybe", "s3://b/p?endpoint=https://KEY:hunter2@s3.example",
	} {
		if opt, err := s3.ParseURL(raw); err == nil {
			t.Errorf("ParseURL(%q) = %+v, want an error", raw, opt)
		} else if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("ParseURL(%q): the error repeats the credentials: %v", raw, err)
		}
	}
}

// misbehaving is an httptest S3 endpoint that answers each request with
// the next status of script (then 200 for the versioning probe), and
// counts requests per method.
type misbehaving struct {
	mu     sync.Mutex
	script []int
	hang   time.Duration // delay before the first answer
	count  atomic.Int32
}

func (m *misbehaving) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	if r.URL.Query().Has("versioning") {
		w.Write([]byte(`<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"/>`))
		return
	}
	n := m.count.Add(1)
	if n == 1 && m.hang > 0 {
		time.Sleep(m.hang)
	}
	m.mu.Lock()
	code := http.StatusOK
	if len(m.script) > 0 {
		code, m.script = m.script[0], m.script[1:]
	}
	m.mu.Unlock()
	if code == http.StatusOK {
		w.Header().Set("ETag", `"x"`)
		w.WriteHeader(http.StatusOK)
		return
	}
	errCode := map[int]string{503: "SlowDown", 429: "TooManyRequests", 500: "InternalError", 403: "AccessDenied",
		400: "InvalidArgument", 404: "NoSuchKey", 412: "PreconditionFailed", 409: "OperationAborted"}[code]
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(code)
	w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>` + errCode + `</Code><Message>scripted</Message></Error>`))
}

// TestRetryPolicy: 5xx, 503 SlowDown, 429 and timeouts are retried until
// an attempt succeeds; other 4xx are not retried at all; the attempts are
// bounded.
func TestRetryPolicy(t *testing.T) {
	cases := []struct {
		name     string
		script   []int
		hang     time.Duration
		attempts int32
		wantErr  error // nil: success
	}{
		{"500 then ok", []int{500, 500, 200}, 0, 3, nil},
		{"SlowDown then ok", []int{503, 503, 503, 200}, 0, 4, nil},
		{"429 then ok", []int{429, 200}, 0, 2, nil},
		{"timeout then ok", []int{200, 200}, 2 * time.Second, 2, nil},
		{"502 504 then ok", []int{502, 504, 200}, 0, 3, nil},
		{"403 once", []int{403, 200}, 0, 1, errors.New("any")},
		{"400 once", []int{400, 200}, 0, 1, errors.New("any")},
		{"409 once", []int{409, 200}, 0, 1, errors.New("any")},
		{"412 once: exists", []int{412, 200}, 0, 1, vault.ErrExists},
		{"500 forever: bounded", []int{500, 500, 500, 500, 500, 500, 500, 500}, 0, 4, errors.New("any")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := &misbehaving{script: tc.script, hang: tc.hang}
			srv := httptest.NewServer(m)
			defer srv.Close()
			st, err := s3.Open(context.Background(), s3.Options{
				Bucket: "b", Endpoint: srv.URL, Region: "us-east-1", PathStyle: true,
				Credentials: credentials.NewStaticCredentialsProvider("k", "s", ""),
				MaxAttempts: 4, MaxBackoff: 20 * time.Millisecond, AttemptTimeout: 300 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			data := []byte("snapshot")
			err = st.Put(context.Background(), vault.Handle{Type: vault.SnapshotObject, Name: "ab"}, bytes.NewReader(data), int64(len(data)))
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("Put = %v, want success after retries", err)
			case tc.wantErr != nil && err == nil:
				t.Fatalf("Put succeeded, want an error")
			case errors.Is(tc.wantErr, vault.ErrExists) && !errors.Is(err, vault.ErrExists):
				t.Fatalf("Put = %v, want ErrExists", err)
			}
			if got := m.count.Load(); got != tc.attempts {
				t.Fatalf("%d attempts, want %d", got, tc.attempts)
			}
		})
	}
}
