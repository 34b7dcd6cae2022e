package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/coffer-backup/coffer/internal/posture"
	"github.com/coffer-backup/coffer/internal/server/servertest"
)

// needChromium finds headless Chromium (Debian package chromium). It
// skips the test when none is installed, unless COFFER_REQUIRE_SERVICES
// is set (CI installs it), where a missing browser fails.
func needChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const why = "headless Chromium is not installed (apt-get install --no-install-recommends chromium)"
	if os.Getenv("COFFER_REQUIRE_SERVICES") != "" {
		t.Fatalf("%s; COFFER_REQUIRE_SERVICES is set", why)
	}
	t.Skip(why)
	return ""
}

// browser starts headless Chromium for the test. It runs as root in CI
// containers, where Chromium's sandbox cannot start: --no-sandbox.
func browser(t *testing.T, exe string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(acancel)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(bcancel)
	// Start the browser now, so that a failure to start is reported as such.
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[int](`1`)); err != nil {
		t.Fatalf("start %s: %v", exe, err)
	}
	return bctx
}

// pageView is what a rendered page shows, read by the browser.
type pageView struct {
	// Text is the body's innerText: what is rendered, not what is merely
	// in the DOM (hidden elements have none).
	Text string `json:"text"`
	// Shown maps each probed selector to whether it is visible: laid out
	// with a non-empty box, not hidden by CSS (display, visibility,
	// opacity, its own or an ancestor's), and, once scrolled into view,
	// not covered by another element at its centre.
	Shown map[string]string `json:"shown"`
	// Overall is the summary's overall line and whether it is within the
	// first screen, before any scrolling.
	Overall      string `json:"overall"`
	OverallAbove bool   `json:"overall_above"`
	// Resources are the resources the page loaded (Resource Timing).
	Resources []string `json:"resources"`
}

// viewJS measures each selector of sels (a JSON array) in the page.
const viewJS = `(() => {
  const sels = %s;
  const shown = {};
  for (const sel of sels) {
    const el = document.querySelector(sel);
    if (!el) { shown[sel] = "missing"; continue; }
    el.scrollIntoView({block: "start"});
    const r = el.getBoundingClientRect();
    const cs = getComputedStyle(el);
    if (r.width < 1 || r.height < 1) { shown[sel] = "empty box " + r.width + "x" + r.height; continue; }
    if (!el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true, contentVisibilityAuto: true})) { shown[sel] = "hidden by CSS"; continue; }
    if (cs.color === cs.backgroundColor) { shown[sel] = "text in its background colour"; continue; }
    // Its first line: the top left corner of what shows once scrolled to.
    const top = document.elementFromPoint(Math.max(r.left, 0) + Math.min(r.width, 40) / 2, Math.max(r.top, 0) + Math.min(r.height, 20) / 2);
    if (!top || !(el === top || el.contains(top))) { shown[sel] = "covered by " + (top ? top.tagName : "nothing"); continue; }
    shown[sel] = "visible";
  }
  window.scrollTo(0, 0);
  const o = document.querySelector("#overall");
  return {
    text: document.body.innerText,
    shown: shown,
    overall: o ? o.innerText : "",
    overall_above: !!o && o.getBoundingClientRect().bottom <= window.innerHeight && o.getBoundingClientRect().top >= 0,
    resources: performance.getEntriesByType("resource").map(e => e.name),
  };
})()`

// render loads file from file:// in the browser, records every request
// the page makes, and measures sels.
func render(t *testing.T, bctx context.Context, file string, sels []string) (pageView, []string) {
	t.Helper()
	ctx, cancel := chromedp.NewContext(bctx) // a new tab
	defer cancel()
	page := (&url.URL{Scheme: "file", Path: file}).String()
	var mu sync.Mutex
	var requests []string
	if err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			if ev.Request.URL != page {
				requests = append(requests, ev.Request.URL)
			}
		case *network.EventLoadingFailed:
			if ev.BlockedReason != "" {
				requests = append(requests, "blocked ("+string(ev.BlockedReason)+")")
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(page)); err != nil {
		t.Fatalf("load %s: %v", page, err)
	}
	js, _ := json.Marshal(sels)
	v, err := chromedp.Run(ctx, chromedp.Evaluate[pageView](fmt.Sprintf(viewJS, js)))
	if err != nil {
		t.Fatalf("measure %s: %v", page, err)
	}
	mu.Lock()
	defer mu.Unlock()
	return v, append([]string(nil), requests...)
}

// cssString quotes s as a CSS string.
func cssString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\%x ", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// wantRendered asserts that the HTML report at file, made from the JSON
// report want, shows its summary (overall status and counts) on the first
// screen, its scope's three encryption layers and each vault's section,
// and loads nothing from anywhere.
func wantRendered(t *testing.T, bctx context.Context, file string, want *posture.Report) {
	t.Helper()
	sels := []string{"#summary", "#overall", "#summary table", "#scope"}
	for _, v := range want.Vaults {
		sec := `section[id=` + cssString("vault-"+v.ID) + `]`
		sels = append(sels, sec, sec+" h2", sec+" table")
	}
	view, requests := render(t, bctx, file, sels)
	for _, sel := range sels {
		if view.Shown[sel] != "visible" {
			t.Errorf("%s is not visible: %s", sel, view.Shown[sel])
		}
	}
	if len(requests) > 0 || len(view.Resources) > 0 {
		t.Errorf("the report is not self-contained: requests %q, resources %q", requests, view.Resources)
	}
	overall := fmt.Sprintf("Overall status: %s · %d vault(s) · checks: %d pass, %d warn, %d fail, %d n/a",
		strings.ToUpper(string(want.Worst())), len(want.Vaults), want.Total("pass"), want.Total("warn"), want.Total("fail"), want.Total("n/a"))
	if view.Overall != overall {
		t.Errorf("overall line %q, want %q", view.Overall, overall)
	}
	if !view.OverallAbove {
		t.Error("the overall status is not on the first screen")
	}
	rendered := strings.Join(strings.Fields(view.Text), " ")
	wants := []string{"At rest, in the vault", "In transit, by TLS", "At the source, by disk encryption", "Not covered"}
	if want.Signed {
		wants = append(wants, "signed by the server's audit key")
	} else {
		wants = append(wants, "UNSIGNED: "+want.UnsignedReason)
	}
	for _, v := range want.Vaults {
		n := v.Counts()
		// The summary row: vault, status, counts.
		wants = append(wants, fmt.Sprintf("%s %s %d %d %d %d", v.Name, strings.ToUpper(string(v.Status)), n[posture.Pass], n[posture.Warn], n[posture.Fail], n[posture.NA]),
			"Vault "+v.Name)
		for _, c := range v.Checks {
			wants = append(wants, c.ID)
			if c.Remediation != "" {
				wants = append(wants, strings.Join(strings.Fields(c.Remediation), " "))
			}
		}
	}
	for _, w := range wants {
		if !strings.Contains(rendered, w) {
			t.Errorf("the rendered report does not show %q", w)
		}
	}
	if t.Failed() {
		t.Logf("rendered text:\n%s", view.Text)
	}
}

// TestPostureHTMLInBrowser: the HTML reports `coffer posture --format html
// --out F` writes, of a local vault and of a server's vault, rendered in
// headless Chromium from file://: the summary (overall status, counts per
// vault), the scope and each vault's section are visible, and the page
// requests nothing (no network, no other file).
func TestPostureHTMLInBrowser(t *testing.T) {
	exe := needChromium(t)
	bctx := browser(t, exe)

	t.Run("the measure can fail", func(t *testing.T) {
		// A page that hides its summary and fetches a stylesheet and an
		// image: the same measures must catch all three.
		hits := make(chan string, 4)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case hits <- r.URL.Path:
			default:
			}
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		file := filepath.Join(t.TempDir(), "bad.html")
		os.WriteFile(file, []byte(`<!DOCTYPE html><html><head><link rel="stylesheet" href="http://`+ln.Addr().String()+`/x.css"></head><body>
<section id="summary" style="opacity:0"><p id="overall">Overall status: PASS</p></section>
<section id="scope"><p style="visibility:hidden">x</p></section>
<div style="position:fixed;inset:0;background:#fff"></div>
<img src="http://`+ln.Addr().String()+`/y.png"></body></html>`), 0o600)
		view, requests := render(t, bctx, file, []string{"#summary", "#overall", "#scope p", "#nothing", "#scope"})
		for sel, want := range map[string]string{"#summary": "hidden by CSS", "#overall": "hidden by CSS", "#scope p": "hidden by CSS", "#nothing": "missing", "#scope": "covered by DIV"} {
			if !strings.HasPrefix(view.Shown[sel], want) {
				t.Errorf("%s: %q, want %q", sel, view.Shown[sel], want)
			}
		}
		if len(requests) < 2 || len(view.Resources) < 2 {
			t.Errorf("requests %q, resources %q: the external stylesheet and image were not seen", requests, view.Resources)
		}
	})

	t.Run("hostile values", func(t *testing.T) {
		// A hostile server's report: markup, script and external
		// resources in every value it controls. Rendered, it runs no
		// script, requests nothing and shows the values as text.
		hits := make(chan string, 8)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case hits <- r.URL.Path:
			default:
			}
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		ext := "http://" + ln.Addr().String()
		evil := `x"><img src="` + ext + `/img" onerror="window.pwned=1"><script>window.pwned=1</script><link rel=stylesheet href="` + ext + `/css"><style>body{display:none}</style>`
		checks := posture.Run(posture.Facts{Now: clockStart, Mode: "server",
			Sources: []posture.SourceFact{{Host: evil, Snapshot: evil, Time: clockStart, Writer: evil}}})
		for i := range checks {
			checks[i].Summary += evil
		}
		rep := &posture.Report{Generated: clockStart, Mode: "server", Producer: evil, Policy: posture.ReportPolicy(posture.Policy{}),
			Vaults: []posture.Vault{posture.NewVault(evil, "id"+evil, checks, nil, clockStart)}}
		env, err := posture.Seal(rep, nil)
		if err != nil {
			t.Fatal(err)
		}
		page, rep2, err := renderPosture("html", env)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), "hostile.html")
		os.WriteFile(file, page, 0o600)
		wantRendered(t, bctx, file, rep2)
		ctx, cancel := chromedp.NewContext(bctx)
		defer cancel()
		if err := chromedp.Do(ctx, chromedp.Navigate((&url.URL{Scheme: "file", Path: file}).String())); err != nil {
			t.Fatal(err)
		}
		pwned, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.pwned === 1 || document.querySelectorAll("script, img, link[rel=stylesheet], body style").length > 0`))
		if err != nil || pwned {
			t.Errorf("the hostile values ran or became elements: %v %v", pwned, err)
		}
		select {
		case p := <-hits:
			t.Errorf("the hostile report fetched %s", p)
		default:
		}
		if view, _ := render(t, bctx, file, []string{}); !strings.Contains(view.Text, `<script>window.pwned=1</script>`) {
			t.Error("the hostile values are not shown as text")
		}
	})

	t.Run("local vault", func(t *testing.T) {
		e := newEnv(t)
		backupJSON(t, e, smallData(t))
		mustCoffer(t, e, "vault", "set", "--soft-delete", "off", "--confirm") // a failing check
		want := postureJSON(t, e)
		file := filepath.Join(t.TempDir(), "local report.html") // a space: the file URL is escaped
		mustCoffer(t, e, "posture", "--format", "html", "--out", file)
		if want.Worst() != posture.Fail || want.Signed {
			t.Fatalf("local report: worst %s, signed %v", want.Worst(), want.Signed)
		}
		wantRendered(t, bctx, file, want)
	})

	t.Run("server vault", func(t *testing.T) {
		_, e := remoteVaultEnv(t, servertest.Options{})
		backupJSON(t, e, smallData(t))
		want := postureJSON(t, e)
		file := filepath.Join(t.TempDir(), "report.html")
		mustCoffer(t, e, "posture", "--format", "html", "--out", file)
		if !want.Signed {
			t.Fatal("a server's report is not signed")
		}
		wantRendered(t, bctx, file, want)
	})
}
