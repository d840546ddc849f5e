package dashboard_test

// The browser harness: headless Chromium (Debian's chromium-headless-shell,
// installed by scripts/deps.sh) driven with chromedp. A browser records
// every console error, uncaught exception, log error and request of its
// tab; check fails the test on any error and on any request that does not
// go to the test server. Every step has its own timeout. Dialogs
// (confirm(), alert()) are accepted from a goroutine of their own, never
// from inside an event listener, which would deadlock the tab.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/certfleet/certfleet/internal/testenv"
)

// chromiumPath is Debian's chromium-headless-shell binary: not the
// /usr/bin wrapper, which does not exec, so stopping it would leave the
// browser running.
const chromiumPath = "/usr/lib/chromium/chromium-headless-shell"

// stepTimeout bounds each browser step.
const stepTimeout = 15 * time.Second

type browser struct {
	t    testing.TB
	ctx  context.Context
	base *url.URL

	mu       sync.Mutex
	errors   []string // console errors, exceptions, log errors
	requests []string // every URL requested
	dialogs  []string // messages of the dialogs accepted
}

// newBrowser starts a browser for the server at base, stopped when the
// test ends.
func newBrowser(t testing.TB, base string) *browser {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if testing.Short() {
			t.Skip("no chromium-headless-shell; scripts/deps.sh installs it")
		}
		t.Fatalf("no %s (%v): run scripts/deps.sh, which installs chromium-headless-shell", chromiumPath, err)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	b := &browser{t: t, base: u}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath), chromedp.Headless, chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.Flag("metrics-recording-only", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithListener(b.listen))
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	b.ctx = ctx
	// The first run starts the browser and binds it to its context: that
	// must be the tab's own, not a step's, whose end would stop it. A
	// timer bounds the start instead.
	stuck := time.AfterFunc(stepTimeout, cancel)
	err = chromedp.Do(ctx, chromedp.Navigate("about:blank"))
	stuck.Stop()
	if err != nil {
		t.Fatalf("browser: start %s: %v", chromiumPath, err)
	}
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.dialogs = append(b.dialogs, ev.Message)
			b.mu.Unlock()
			if _, err := chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true}); err != nil && ctx.Err() == nil {
				t.Errorf("accept dialog %q: %v", ev.Message, err)
			}
		}
	}()
	return b
}

// listen records the tab's errors and requests; it runs in the tab's
// loop, so it only appends.
func (b *browser) listen(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var args []string
			for _, a := range ev.Args {
				args = append(args, fmt.Sprint(a.Value, a.Description))
			}
			b.errors = append(b.errors, "console."+string(ev.Type)+": "+strings.Join(args, " "))
		}
	case *runtime.EventExceptionThrown:
		b.errors = append(b.errors, "exception: "+ev.ExceptionDetails.Text)
	case *log.EventEntryAdded:
		if ev.Entry.Level == "error" {
			b.errors = append(b.errors, "log: "+ev.Entry.Text+" "+ev.Entry.URL)
		}
	case *network.EventRequestWillBeSent:
		b.requests = append(b.requests, ev.Request.URL)
	}
}

// step runs fn with its own timeout and fails the test on an error.
func (b *browser) step(what string, fn func(ctx context.Context) error) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	if err := fn(ctx); err != nil {
		b.t.Fatalf("browser: %s: %v", what, err)
	}
}

// do runs actions as one step.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	b.step(what, func(ctx context.Context) error { return chromedp.Do(ctx, actions...) })
}

// open navigates to path of the server and waits for the page's h1.
// chromedp.Navigate waits for the load event, which under the full
// suite's load (-race, every package at once, 2 cores) the browser missed
// now and then, twice in a row once (the page served in 5 ms). So open
// marks the page it leaves, starts the navigation from the page and polls
// until a document without the mark has been parsed and shows its h1.
// Each poll has a deadline of its own: an evaluation sent while the old
// document goes can stay unanswered, and one such poll took the whole
// step in CI twice in a row (/alerts served in 2 ms both times). A
// navigation that times out is tried once more; the error says which
// phase timed out and what the last poll answered.
func (b *browser) open(path string) {
	b.t.Helper()
	target := b.base.String() + path
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
		err := b.poll(ctx, "start the navigation", fmt.Sprintf("window.__certfleetLeft = true; location.assign(%q); true", target))
		if err == nil {
			err = b.poll(ctx, "wait for the new page's h1", parsedAnd(`!window.__certfleetLeft && visible("h1")`))
		}
		cancel()
		if err == nil {
			return
		}
		if attempt == 2 || !errors.Is(err, context.DeadlineExceeded) {
			b.t.Fatalf("browser: open %s: %v", path, err)
		}
		b.t.Logf("browser: open %s: %v; once more", path, err)
	}
}

// pollTimeout bounds one evaluation of poll.
const pollTimeout = 2 * time.Second

// poll evaluates expr until it answers true or ctx ends, each evaluation
// under its own pollTimeout. Errors of single evaluations (the document
// going away under one) only mean another try.
func (b *browser) poll(ctx context.Context, phase, expr string) error {
	var last error
	for {
		pctx, cancel := context.WithTimeout(ctx, pollTimeout)
		ok, err := chromedp.Run(pctx, chromedp.Evaluate[bool](expr))
		cancel()
		if err == nil && ok {
			return nil
		}
		if err != nil {
			last = err
		} else {
			last = errors.New("answered false")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last poll: %v)", phase, ctx.Err(), last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// text returns the text of the first element sel matches.
func (b *browser) text(sel string) string {
	b.t.Helper()
	var s string
	b.step("text of "+sel, func(ctx context.Context) (err error) {
		s, err = chromedp.Run(ctx, chromedp.Text(sel))
		return err
	})
	return s
}

// count returns how many elements sel matches now.
func (b *browser) count(sel string) int {
	b.t.Helper()
	var n int
	b.step("count "+sel, func(ctx context.Context) (err error) {
		n, err = chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", sel)))
		return err
	})
	return n
}

// location returns the page's URL.
func (b *browser) location() string {
	b.t.Helper()
	var s string
	b.step("location", func(ctx context.Context) (err error) {
		s, err = chromedp.Run(ctx, chromedp.Location())
		return err
	})
	return s
}

// waitLocation waits until the page's URL contains part (a form's GET
// landed) and its h1 is shown.
func (b *browser) waitLocation(part string) {
	b.t.Helper()
	b.arrive("wait for a location with "+part, fmt.Sprintf(`location.href.includes(%q) && visible("h1")`, part))
}

// arrive waits, polling as open does (a navigation's events are not
// waited for), until the page has been parsed and the JavaScript
// condition cond holds; visible(sel) tells whether an element sel
// matches is shown.
func (b *browser) arrive(what, cond string) {
	b.t.Helper()
	b.step(what, func(ctx context.Context) error { return b.poll(ctx, what, parsedAnd(cond)) })
}

// parsedAnd is a JavaScript expression: has the page been parsed, and
// does cond hold? cond may call visible(sel): is an element sel matches
// shown?
func parsedAnd(cond string) string {
	return `(() => {
		const visible = (sel) => { const e = document.querySelector(sel); return e !== null && e.getClientRects().length > 0; };
		return document.readyState !== "loading" && (` + cond + `);
	})()`
}

// signIn signs in with key through the form.
func (b *browser) signIn(key string) {
	b.t.Helper()
	b.open("/signin")
	b.do("sign in", chromedp.SendKeys("#api_key", key), chromedp.Submit("#api_key"))
	b.arrive("signed in", `visible("header.top")`)
}

// signOut signs out with the navigation's button.
func (b *browser) signOut() {
	b.t.Helper()
	b.do("sign out", chromedp.Click(`form[action="/signout"] button`))
	b.arrive("signed out", `visible("#api_key")`)
}

// shot saves the page as docs/screenshots/<name>.png when
// CERTFLEET_SCREENSHOTS=1.
func (b *browser) shot(name string) {
	b.t.Helper()
	if os.Getenv("CERTFLEET_SCREENSHOTS") != "1" {
		return
	}
	var png []byte
	b.step("screenshot "+name, func(ctx context.Context) (err error) {
		png, err = chromedp.Run(ctx, chromedp.FullScreenshot(100))
		return err
	})
	dir := filepath.Join(testenv.RepoRoot(), "docs", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// check fails the test on any error the tab reported and any request not
// to the test server (the whole page, assets included, is served by it).
func (b *browser) check() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.errors {
		b.t.Errorf("browser reported %s", e)
	}
	for _, r := range b.requests {
		u, err := url.Parse(r)
		if r == "about:blank" || strings.HasPrefix(r, "data:") {
			continue
		}
		if err != nil || u.Host != b.base.Host {
			b.t.Errorf("browser requested %s, not on the test server %s", r, b.base.Host)
		}
	}
	if len(b.requests) == 0 {
		b.t.Error("browser recorded no requests: the recording is broken")
	}
	b.errors, b.requests = nil, nil
}

// acceptedDialogs returns the messages of the dialogs accepted so far.
func (b *browser) acceptedDialogs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.dialogs...)
}

// axeVersion is the axe-core release scripts/axe.sh fetches; keep the two
// (and docs/dashboard.md) in step.
const axeVersion = "4.14.1"

var axeScript = sync.OnceValues(func() ([]byte, error) {
	return os.ReadFile(filepath.Join(testenv.RepoRoot(), ".data", "npm", "axe-core-"+axeVersion, "axe.min.js"))
})

// axeViolation is one failed axe-core rule with the selectors of the
// elements that fail it.
type axeViolation struct {
	ID     string   `json:"id"`
	Impact string   `json:"impact"`
	Help   string   `json:"help"`
	Nodes  []string `json:"nodes"`
}

// audit runs axe-core's WCAG 2 A and AA rules on the current page (page
// names it in messages) and fails the test on every serious or critical
// violation; minor and moderate ones are logged. The script goes in
// through Runtime.evaluate, which the dashboard's CSP does not govern.
func (b *browser) audit(page string) {
	b.t.Helper()
	for _, v := range b.axe(page) {
		msg := fmt.Sprintf("axe on %s: %s (%s): %s: %s", page, v.ID, v.Impact, v.Help, strings.Join(v.Nodes, ", "))
		if v.Impact == "serious" || v.Impact == "critical" {
			b.t.Error(msg)
		} else {
			b.t.Log(msg)
		}
	}
}

// axe injects axe-core into the current page and returns its WCAG 2 A and
// AA violations.
func (b *browser) axe(page string) []axeViolation {
	b.t.Helper()
	src, err := axeScript()
	if err != nil {
		b.t.Fatalf("audit %s: no axe-core (%v): run `go tool task deps`, which fetches axe-core@%s", page, err, axeVersion)
	}
	var vs []axeViolation
	b.step("audit "+page, func(ctx context.Context) error {
		typ, err := chromedp.Run(ctx, chromedp.Evaluate[string](string(src)+"\n;typeof axe"))
		if err != nil {
			return fmt.Errorf("inject axe-core: %w", err)
		}
		if typ != "object" {
			return fmt.Errorf("inject axe-core: axe is %s", typ)
		}
		vs, err = chromedp.Run(ctx, chromedp.Evaluate[[]axeViolation](`axe.run(document, {runOnly: ['wcag2a', 'wcag2aa'], resultTypes: ['violations']}).then(r => r.violations.map(v => ({id: v.id, impact: v.impact || '', help: v.help, nodes: v.nodes.map(n => n.target.join(' '))})))`, chromedp.EvalAwaitPromise))
		return err
	})
	return vs
}

// TestAuditFinds checks that the audit sees what it is for: an unlabelled
// input and grey-on-grey text, on a page served with the dashboard's kind
// of CSP (no inline scripts).
func TestAuditFinds(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'")
		fmt.Fprint(w, `<!doctype html><html lang="en"><title>t</title><main><h1>t</h1>`+
			`<input type="text"><p style="color:#aaa;background:#bbb">faint</p></main></html>`)
	}))
	defer srv.Close()
	b := newBrowser(t, srv.URL)
	b.open("/")
	found := map[string]bool{}
	for _, v := range b.axe("bad page") {
		found[v.ID] = true
	}
	for _, id := range []string{"label", "color-contrast"} {
		if !found[id] {
			t.Errorf("axe did not report %s on a page that breaks it; got %v", id, found)
		}
	}
}
