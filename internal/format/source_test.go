package format_test

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/coffer-backup/coffer/internal/format"
	"github.com/coffer-backup/coffer/internal/seal"
	"github.com/coffer-backup/coffer/internal/vault"
)

func sampleSource() *vault.SourceFacts {
	return &vault.SourceFacts{
		Volumes: []vault.SourceVolume{
			{Path: "/etc", Mount: "/", Device: "/dev/mapper/root", FSType: "ext4", Encryption: vault.VolumeEncrypted, Method: "luks2", Detail: "dm-0 CRYPT-LUKS2 over sda2"},
			{Path: "/home/ann/docs", Mount: "/home", Device: "/dev/sdb1", FSType: "xfs", Encryption: vault.VolumeUnencrypted},
		},
		LocalCopies: &vault.LocalCopyStatus{Keep: 2, Held: 1, Encrypted: true, Cipher: "AES-256-GCM"},
	}
}

// A source report is sealed in the snapshot object (version 2 only) and
// read back as written; it is not part of the digest (the catalog does
// not hold it: docs/format.md §8.7), so the digests of every snapshot stay
// as format 2 always wrote them.
func TestSnapshotSourceField(t *testing.T) {
	dek := seal.NewRandomKey()
	keys := func(uint32) (seal.Key, error) { return dek, nil }
	s := sampleSnapshot()
	s.Paths = []string{"/etc", "/home/ann/docs"}
	plain := format.SnapshotDigest(s)
	s.Source = sampleSource()
	if format.SnapshotDigest(s) != plain {
		t.Fatal("the source report changed the digest: the catalog's records would no longer verify")
	}
	b, err := format.SealSnapshotLinked(s, format.SnapshotLink{Seq: 7}, dek, 1)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := format.OpenSnapshotLinked(s.ID, b, keys)
	if err != nil {
		t.Fatal(err)
	}
	if got.Source == nil || len(got.Source.Volumes) != 2 || got.Source.Volumes[0] != s.Source.Volumes[0] ||
		got.Source.Volumes[1] != s.Source.Volumes[1] || got.Source.LocalCopies == nil || *got.Source.LocalCopies != *s.Source.LocalCopies {
		t.Fatalf("round trip: %+v", got.Source)
	}
	if _, err := format.SealSnapshot(s, dek, 1); err == nil {
		t.Error("a format 1 object with a source report was sealed")
	}
	// No report stays no report.
	s.Source = nil
	b, _ = format.SealSnapshotLinked(s, format.SnapshotLink{Seq: 7}, dek, 1)
	if got, _, err := format.OpenSnapshotLinked(s.ID, b, keys); err != nil || got.Source != nil {
		t.Fatalf("no report: %+v, %v", got.Source, err)
	}
}

// sealV2 seals plain as a snapshot object of the given version from the
// spec (§8), whatever its JSON says.
func sealVersion(dek []byte, version byte, id [32]byte, plain []byte) []byte {
	var salt [32]byte
	salt[0] = 9
	prefix := append([]byte(format.SnapshotMagic), version, 0, 0, 0)
	prefix = binary.LittleEndian.AppendUint32(prefix, 1)
	prefix = append(prefix, salt[:]...)
	k := specDerive(dek, salt[:], "coffer/v1/snapshot")
	aad := append(append([]byte(nil), prefix...), id[:]...)
	return specAEAD(k).Seal(prefix, make([]byte, 12), plain, aad)
}

// A key holder's object (a hostile local writer, a future version) with a
// report that breaks the rules is refused as corrupt, never passed on to
// the terminal or the posture report; in a version 1 object it is refused
// outright.
func TestAttackSealedSourceReport(t *testing.T) {
	dek := seal.NewRandomKey()
	keys := func(uint32) (seal.Key, error) { return dek, nil }
	id := testID("snap")
	head := `{"time":"2024-01-02T03:04:05Z","host":"h","paths":["/srv"],"tags":[],"tree":"` + testID("t").String() + `","files":0,"dirs":0,"bytes":0,"bytes_added":0,"duration_ns":0`
	link := `,"seq":1,"prev":"` + strings.Repeat("00", 32) + `"`
	vol := func(v string) string { return `,"source":{"volumes":[` + v + `]}` }
	for name, c := range map[string]struct {
		version byte
		json    string
		ok      bool
	}{
		"valid":            {2, head + vol(`{"path":"/srv","mount":"/","device":"/dev/dm-0","fstype":"ext4","encryption":"encrypted","method":"luks2"}`) + link + `}`, true},
		"version 1":        {1, head + vol(`{"path":"/srv","mount":"/","device":"d","fstype":"ext4","encryption":"unknown"}`) + `}`, false},
		"escape in detail": {2, head + vol(`{"path":"/srv","mount":"/","device":"d","fstype":"ext4","encryption":"unknown","detail":"\u001b[2Jgone"}`) + link + `}`, false},
		"other path":       {2, head + vol(`{"path":"/home","mount":"/","device":"d","fstype":"ext4","encryption":"unknown"}`) + link + `}`, false},
		"bad state":        {2, head + vol(`{"path":"/srv","mount":"/","device":"d","fstype":"ext4","encryption":"yes"}`) + link + `}`, false},
		"unknown field":    {2, head + vol(`{"path":"/srv","mount":"/","device":"d","fstype":"ext4","encryption":"unknown","evil":1}`) + link + `}`, false},
	} {
		b := sealVersion(dek[:], c.version, id, []byte(c.json))
		_, _, err := format.OpenSnapshotLinked(id, b, keys)
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, vault.ErrCorrupt)) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// CheckSnapshot bounds every field of a report: a writer (an agent's
// token) cannot store strings that would reach another user's terminal,
// unbounded lists, or volumes of paths its snapshot does not hold.
func TestAttackSourceReportBounds(t *testing.T) {
	base := vault.SnapshotRecord{Time: sampleSnapshot().Time, Host: "h", Paths: []string{"/etc", "/home/ann/docs"}, Tree: testID("t")}
	ok := base
	ok.Source = sampleSource()
	if err := format.CheckSnapshot(ok); err != nil {
		t.Fatalf("valid report refused: %v", err)
	}
	many := &vault.SourceFacts{}
	for i := 0; i <= format.MaxSourceVolumes; i++ {
		many.Volumes = append(many.Volumes, vault.SourceVolume{Path: "/etc", Encryption: vault.VolumeUnknown})
	}
	for name, m := range map[string]func(f *vault.SourceFacts){
		"too many":         func(f *vault.SourceFacts) { *f = *many },
		"repeated path":    func(f *vault.SourceFacts) { f.Volumes[1].Path = "/etc" },
		"path not backed":  func(f *vault.SourceFacts) { f.Volumes[1].Path = "/root" },
		"escape device":    func(f *vault.SourceFacts) { f.Volumes[0].Device = "/dev/\x1b]0;owned\x07" },
		"bidi detail":      func(f *vault.SourceFacts) { f.Volumes[0].Detail = "ok \u202e" },
		"newline fstype":   func(f *vault.SourceFacts) { f.Volumes[0].FSType = "ext4\nencrypted" },
		"invalid utf8":     func(f *vault.SourceFacts) { f.Volumes[0].Mount = "/\xff" },
		"long detail":      func(f *vault.SourceFacts) { f.Volumes[0].Detail = strings.Repeat("x", format.MaxSourceDetail+1) },
		"long device":      func(f *vault.SourceFacts) { f.Volumes[0].Device = strings.Repeat("x", format.MaxSourceDevice+1) },
		"relative mount":   func(f *vault.SourceFacts) { f.Volumes[0].Mount = "home" },
		"bad state":        func(f *vault.SourceFacts) { f.Volumes[0].Encryption = "Encrypted" },
		"no method":        func(f *vault.SourceFacts) { f.Volumes[0].Method = "" },
		"method when not":  func(f *vault.SourceFacts) { f.Volumes[1].Method = "luks2" },
		"method charset":   func(f *vault.SourceFacts) { f.Volumes[0].Method = "LUKS 2" },
		"negative copies":  func(f *vault.SourceFacts) { f.LocalCopies.Keep = -1 },
		"huge held":        func(f *vault.SourceFacts) { f.LocalCopies.Held = format.MaxLocalCopies + 1 },
		"escape in cipher": func(f *vault.SourceFacts) { f.LocalCopies.Cipher = "AES\x1b[0m" },
	} {
		s := base
		s.Source = sampleSource()
		m(s.Source)
		if err := format.CheckSnapshot(s); !errors.Is(err, format.ErrInvalidSnapshot) {
			t.Errorf("%s: accepted (%v)", name, err)
		}
	}
}
