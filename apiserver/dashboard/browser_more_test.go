package dashboard_test

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/certfleet/certfleet/events"
)

// TestBrowserMorePages drives headless Chromium through the alerts,
// channels, client certificates, managed certificates and audit log
// pages: one action each with a write key, then every page with a read
// key, which gets no form that changes things; no console errors and no
// request leaving the test server.
func TestBrowserMorePages(t *testing.T) {
	e := moreEnv(t)
	auditSink(t, e)
	certID := e.issueClientCert(t, "alice-laptop")
	e.issueManaged(t, "shop.example.com")
	b := newBrowser(t, e.URL)
	b.signIn(e.write)

	b.open("/alerts")
	b.do("save alert settings", chromedp.SetValue("#s-expiry", "30, 7"), chromedp.Click(`form[action="/alerts/settings"] button`),
		chromedp.WaitVisible(".flash"))
	if got := b.text(".flash"); !strings.Contains(got, "Alert settings saved") {
		t.Errorf("alerts: got flash %q", got)
	}
	b.shot("alerts")
	b.audit("alerts")
	b.check()

	b.open("/channels")
	b.do("add a channel", chromedp.SetValue("#c-type", "email"), chromedp.SendKeys("#c-name", "On call"),
		chromedp.SendKeys("#c-to", "ops@example.com"), chromedp.Click(`form[action="/channels/add"] button`),
		chromedp.WaitVisible(".flash"))
	if got := b.text(".flash"); !strings.Contains(got, "Channel added: On call") {
		t.Errorf("channels: got flash %q after adding", got)
	}
	b.open("/channels") // without the flash, so that the next one is the test's
	b.do("send test", chromedp.Click(`form[action$="/test"] button`), chromedp.WaitVisible(".flash"))
	if got := b.text(".flash"); !strings.Contains(got, "Test notification queued") {
		t.Errorf("channels: got flash %q", got)
	}
	if !e.streamHas(t, events.ChannelTestRequested, "ch_") {
		t.Error("channels: the test was not requested")
	}
	b.shot("channels")
	b.audit("channels")
	b.check()

	b.open("/client-certs")
	b.do("revoke", chromedp.Click(`form[action="/client-certs/`+certID+`/revoke"] button`), chromedp.WaitVisible(".flash"))
	if got := b.text(".flash"); !strings.Contains(got, "Certificate revoked") {
		t.Errorf("client certs: got flash %q", got)
	}
	if d := b.acceptedDialogs(); len(d) == 0 || !strings.Contains(d[len(d)-1], "Revoke alice-laptop") {
		t.Errorf("client certs: revoke asked %q, want a confirmation", d)
	}
	b.shot("client-certs")
	b.audit("client-certs")
	b.check()

	b.open("/managed-certs")
	b.do("renew", chromedp.Click(`form[action="/managed-certs/shop.example.com/renew"] button`), chromedp.WaitVisible(".flash"))
	if got := b.text(".flash"); !strings.Contains(got, "Renewal requested") {
		t.Errorf("managed certs: got flash %q", got)
	}
	b.shot("managed-certs")
	b.audit("managed-certs")
	b.check()

	b.open("/audit")
	// The select submits its form on change (app.js).
	b.do("filter by outcome", chromedp.SetValue("#a-status", "success"),
		chromedp.WaitReady(`#a-status option[value="success"][selected]`))
	if loc := b.location(); !strings.Contains(loc, "status=success") {
		t.Errorf("audit: filtered to %s", loc)
	}
	waitAudit(t, e.client(t, e.read), "/audit", "revoke", "renew")
	b.open("/audit")
	b.shot("audit")
	b.audit("audit")
	b.check()

	b.signOut()
	b.signIn(e.read)
	for _, p := range []string{"/alerts", "/channels", "/client-certs", "/managed-certs", "/audit"} {
		b.open(p)
		if n := b.count(`form[method="post"]:not([action="/signout"]):not([action*="/download/"])`); n != 0 {
			t.Errorf("%s (read key): got %d forms that change things, want none", p, n)
		}
		if n := b.count(`form[action*="privkey"], form[action$="/download/key"]`); n != 0 {
			t.Errorf("%s (read key): got %d private key downloads, want none", p, n)
		}
	}
	b.open("/client-certs")
	if n := b.count(`form[action$="/download/crt"]`); n == 0 {
		t.Error("client certs (read key): no certificate download")
	}
	b.shot("client-certs-read")
	b.audit("client-certs-read")
	b.check()
}
