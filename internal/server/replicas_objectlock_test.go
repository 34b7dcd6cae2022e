package server_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/coffer-backup/coffer/internal/agent"
	"github.com/coffer-backup/coffer/internal/api"
	"github.com/coffer-backup/coffer/internal/catalog/postgres"
	"github.com/coffer-backup/coffer/internal/catalog/postgres/pgtest"
	"github.com/coffer-backup/coffer/internal/server"
	"github.com/coffer-backup/coffer/internal/server/servertest"
	"github.com/coffer-backup/coffer/internal/store/s3"
	"github.com/coffer-backup/coffer/internal/store/s3/s3test"
	"github.com/coffer-backup/coffer/internal/vault"
)

// retainWatch sees every Retain (the Object Lock upkeep lengthening an
// object's retention) of the servers whose stores it wraps: how many each
// made, whether two servers' ever ran at the same moment, and it can hold
// a server's next one until released.
type retainWatch struct {
	mu      sync.Mutex
	calls   map[string]int
	active  map[string]int
	overlap bool
	holdFor string        // the server whose next Retain is held
	held    chan struct{} // receives when it is held
	release chan struct{}
}

func newRetainWatch() *retainWatch {
	return &retainWatch{calls: map[string]int{}, active: map[string]int{}, held: make(chan struct{}, 1), release: make(chan struct{})}
}

func (w *retainWatch) enter(srv string) {
	w.mu.Lock()
	w.calls[srv]++
	w.active[srv]++
	for other, n := range w.active {
		if other != srv && n > 0 {
			w.overlap = true
		}
	}
	hold := w.holdFor == srv
	if hold {
		w.holdFor = ""
	}
	w.mu.Unlock()
	if hold {
		w.held <- struct{}{}
		<-w.release
	}
}

func (w *retainWatch) leave(srv string) {
	w.mu.Lock()
	w.active[srv]--
	w.mu.Unlock()
}

func (w *retainWatch) count(srv string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.calls[srv]
}

func (w *retainWatch) holdNext(srv string) {
	w.mu.Lock()
	w.holdFor = srv
	w.mu.Unlock()
}

// watchedStore is an S3 store whose Retain calls w sees.
type watchedStore struct {
	*s3.Store
	w   *retainWatch
	srv string
}

func (st watchedStore) Retain(ctx context.Context, h vault.Handle, atLeast, until time.Time) error {
	st.w.enter(st.srv)
	defer st.w.leave(st.srv)
	return st.Store.Retain(ctx, h, atLeast, until)
}

// lockedVersions returns the COMPLIANCE retention of every object
// version under prefix (key and version ID → until); the zero time for a
// version without COMPLIANCE retention.
func lockedVersions(t *testing.T, sv *s3test.Server, bucket, prefix string) map[[2]string]time.Time {
	t.Helper()
	ctx := context.Background()
	out := map[[2]string]time.Time{}
	p := awss3.NewListObjectVersionsPaginator(sv.Client, &awss3.ListObjectVersionsInput{Bucket: &bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range page.Versions {
			h, err := sv.Client.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: &bucket, Key: v.Key, VersionId: v.VersionId})
			if err != nil {
				t.Fatal(err)
			}
			var until time.Time
			if h.ObjectLockMode == types.ObjectLockModeCompliance {
				until = aws.ToTime(h.ObjectLockRetainUntilDate)
			}
			out[[2]string{aws.ToString(v.Key), aws.ToString(v.VersionId)}] = until
		}
	}
	return out
}

// TestReplicasObjectLockOneAtATime: two servers share a PostgreSQL
// catalog and a bucket with Object Lock, serving a vault whose
// immutability is locked; ten days on, every object's retention needs
// lengthening. While one server's upkeep of the vault runs (held at its
// first Retain), the vault's job lock is held: the other server's
// maintenance run returns no error and lengthens nothing, and a settings
// change through it (a longer soft-delete period) waits for the first to
// finish, then applies the new period. The other server's maintenance
// then takes its own turn. No two servers' upkeeps ever ran at once, no
// retention was shortened, and every object Coffer still needs is
// retained in COMPLIANCE mode for the new period.
func TestReplicasObjectLockOneAtATime(t *testing.T) {
	ctx := context.Background()
	sv := s3test.Start(t) // first: without it the test skips before PostgreSQL starts
	url := pgtest.URL(t)
	bucket := sv.Bucket(t, true)
	w := newRetainWatch()
	conf := func(srv string) func(*server.Options) {
		return func(o *server.Options) {
			o.Catalog = url
			o.OpenStore = func(ctx context.Context, name string) (vault.Store, error) {
				st, err := s3.Open(ctx, s3.Options{Bucket: bucket, Prefix: name, Endpoint: sv.Endpoint,
					Region: "us-east-1", PathStyle: true, Credentials: sv.Credentials(), MaxBackoff: 100 * time.Millisecond})
				if err != nil {
					return nil, err
				}
				return watchedStore{Store: st, w: w, srv: srv}, nil
			}
		}
	}
	a := servertest.StartWith(t, servertest.Options{Configure: conf("a")})
	b := servertest.StartWith(t, servertest.Options{Configure: conf("b"), Replica: a})
	owner := a.Client(t, a.OwnerToken)
	if _, err := owner.CreateVault(ctx, "v"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"enabled", "locked"} {
		if _, err := owner.Vault("v").ChangeSettings(ctx, api.SettingsChange{Immutability: &s}); err != nil {
			t.Fatal(err)
		}
	}
	tok := token(t, owner, "backup-operator", "v")
	for i, e := range []*servertest.Env{a, b} {
		v := e.Client(t, tok).Vault("v")
		if err := v.LoadDedup(ctx); err != nil {
			t.Fatal(err)
		}
		src := t.TempDir()
		writeTree(t, src, map[string][]byte{"big": randomBytes(uint64(40+i), 2<<20), "d/small": randomBytes(uint64(50+i), 20_000)})
		if _, err := agent.Backup(ctx, v, agent.BackupOptions{Paths: []string{src}, Host: "h"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range []*servertest.Env{a, b} {
		e.Clock.Add(int64(10 * 24 * time.Hour))
	}
	before := lockedVersions(t, sv, bucket, "v/")
	cat, err := postgres.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	rec, err := cat.Vault(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}

	// a's upkeep of the vault runs, held at its first Retain (released
	// at the end also if the test stops early).
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(w.release) }) }
	defer release()
	w.holdNext("a")
	doneA := make(chan error, 1)
	go func() { doneA <- a.Server.Maintain(ctx) }()
	select {
	case <-w.held:
	case err := <-doneA:
		t.Fatalf("a's maintenance ended (%v) without lengthening any retention", err)
	case <-time.After(time.Minute):
		t.Fatal("a's maintenance lengthened no retention in a minute")
	}
	unlock, ok, err := cat.TryJobLock(ctx, "object-lock "+rec.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		unlock()
		t.Error("a runs the vault's Object Lock upkeep without holding its job lock")
	}
	if err := b.Server.Maintain(ctx); err != nil {
		t.Errorf("b's maintenance while a's upkeep runs: %v", err)
	}
	if n := w.count("b"); n != 0 {
		t.Errorf("b lengthened %d retentions while a's upkeep of the vault ran", n)
	}
	// A settings change through b waits for a's upkeep, which read the
	// settings before it.
	days := 30
	changed := make(chan error, 1)
	go func() {
		_, err := b.Client(t, b.OwnerToken).Vault("v").ChangeSettings(ctx, api.SettingsChange{SoftDeleteDays: &days})
		changed <- err
	}()
	select {
	case err := <-changed:
		t.Fatalf("the settings change through b returned (%v) while a's upkeep held the vault's job lock", err)
	case <-time.After(500 * time.Millisecond):
	}
	if n := w.count("b"); n != 0 {
		t.Errorf("b's settings change lengthened %d retentions while a's upkeep of the vault ran", n)
	}
	release()
	if err := <-doneA; err != nil {
		t.Errorf("a's maintenance: %v", err)
	}
	select {
	case err := <-changed:
		if err != nil {
			t.Fatalf("the settings change through b: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the settings change through b did not end after a's upkeep did")
	}
	if w.count("b") == 0 {
		t.Error("b's settings change did not lengthen the retentions after a's upkeep ended")
	}
	// b's maintenance takes the turn it waited for.
	n := w.count("b")
	b.Clock.Add(int64(time.Minute))
	if err := b.Server.Maintain(ctx); err != nil {
		t.Errorf("b's next maintenance: %v", err)
	}
	if w.count("b") == n {
		t.Error("b's next maintenance did not run the upkeep it had left to a")
	}
	if w.count("a") == 0 {
		t.Error("a's upkeep made no Retain")
	}
	if w.overlap {
		t.Error("the upkeep of the vault ran on both servers at the same moment")
	}

	after := lockedVersions(t, sv, bucket, "v/")
	for k, was := range before {
		if now, ok := after[k]; !ok {
			t.Errorf("version %s of %s is gone", k[1], k[0])
		} else if now.Before(was) {
			t.Errorf("the retention of version %s of %s was shortened from %v to %v", k[1], k[0], was, now)
		}
	}
	need := time.Now().Add(time.Duration(b.Clock.Load()) + time.Duration(days)*24*time.Hour)
	newestKey := ""
	for k := range after {
		if strings.HasPrefix(k[0], "v/keys/") && k[0] > newestKey {
			newestKey = k[0]
		}
	}
	kinds := map[string]int{}
	for k, until := range after {
		kind := strings.SplitN(strings.TrimPrefix(k[0], "v/"), "/", 2)[0]
		if kind == "keys" && k[0] != newestKey {
			continue // older keyring generations lapse
		}
		kinds[kind]++
		if until.Before(need) {
			t.Errorf("%s (version %s) is retained until %v, want at least %v (the new 30-day soft-delete period)", k[0], k[1], until, need)
		}
	}
	for _, kind := range []string{"config", "keys", "snapshots", "packs"} {
		if kinds[kind] == 0 {
			t.Errorf("no %s object in the bucket (%v)", kind, kinds)
		}
	}
}
