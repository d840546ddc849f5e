package dashboard_test

// Tests of the alerts, channels, client certificates, managed
// certificates and audit log pages (page_alerts.go ... page_audit.go).

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/apiserver"
	"github.com/certfleet/certfleet/apiserver/alerts"
	"github.com/certfleet/certfleet/apiserver/clientcerts"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/coordinator/sink"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/guard"
	"github.com/certfleet/certfleet/internal/managedcert"
	"github.com/certfleet/certfleet/internal/testenv"
)

const (
	testCAPassphrase      = "correct horse battery staple"
	testSecretsPassphrase = "managed certificates test passphrase"
)

// moreEnv is an env whose server signs client certificates and keeps
// managed certificates (passphrases set), with ClickHouse.
func moreEnv(t testing.TB) *env {
	t.Helper()
	return newEnv(t, envOptions{ClickHouse: true, Configure: func(c *apiserver.Config) {
		c.CA = clientcerts.Config{Passphrase: testCAPassphrase, Init: true}
		c.Notify.SecretsPassphrase = testSecretsPassphrase
		c.Notify.DNSTargets = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	}})
}

// issueManaged stores an issued managed certificate of domain for the
// env's tenant, as the ACME worker does.
func (e *env) issueManaged(t testing.TB, domain string) {
	t.Helper()
	ctx := context.Background()
	st, err := managedcert.New(managedcert.Config{Passphrase: testSecretsPassphrase,
		DNSTargets: guard.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}}, e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutDNSAccount(ctx, e.tenant, "rfc2136", "lab", map[string]string{"RFC2136_NAMESERVER": "127.0.0.1:5353",
		"RFC2136_TSIG_KEY": "lab.", "RFC2136_TSIG_SECRET": "c2VjcmV0LXNlY3JldC1zZWNyZXQ=", "RFC2136_TSIG_ALGORITHM": "hmac-sha256."}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(ctx, e.tenant, managedcert.CreateRequest{Domain: domain, DNSProvider: "rfc2136", AccountID: "lab"}); err != nil {
		t.Fatal(err)
	}
	root := testenv.NewCA(t, "test root")
	inter := root.Intermediate(t, "test issuing ca")
	cert := inter.Issue(t, []string{domain}, []*testenv.CA{inter})
	var chain bytes.Buffer
	for _, der := range cert.Certificate {
		_ = pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	m, leaf, err := managedcert.ParseMaterial(chain.Bytes(), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.SaveIssued(ctx, e.tenant, domain, m, leaf, time.Now().Add(60*24*time.Hour), "lifetime"); err != nil {
		t.Fatal(err)
	}
}

// issueClientCert issues a client certificate with a generated key for
// the env's tenant through the page and returns its id.
func (e *env) issueClientCert(t testing.TB, cn string) string {
	t.Helper()
	c := e.client(t, e.write)
	c.get("/client-certs")
	if code, _ := c.post("/client-certs/create", url.Values{"common_name": {cn}, "cert_usage": {"vpn"}, "key_type": {"ecdsa-p256"}}); code != http.StatusSeeOther {
		t.Fatalf("issue %s: got HTTP %d", cn, code)
	}
	_, body := c.get("/client-certs")
	mustContain(t, "issue", body, "Certificate issued: "+cn)
	id := between(body, `<tr id="cc-`, `"`)
	if id == "" {
		t.Fatal("no certificate row")
	}
	return id
}

// streamHas tells whether the tenant's events stream holds an event
// named name whose payload contains want.
func (e *env) streamHas(t testing.TB, name, want string) bool {
	t.Helper()
	msgs, err := e.rdb.XRange(context.Background(), events.EventStream(e.tenant), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if m.Values["name"] == name || strings.Contains(fmtValues(m), name) {
			if strings.Contains(fmtValues(m), want) {
				return true
			}
		}
	}
	return false
}

func fmtValues(m redis.XMessage) string {
	var b strings.Builder
	for k, v := range m.Values {
		b.WriteString(k + "=" + strings.TrimSpace(strings.ReplaceAll(toString(v), "\n", " ")) + " ")
	}
	return b.String()
}

func toString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}

// readOnlyRefused checks a read key sees no form to path and that its
// POST there is refused with 403.
func readOnlyRefused(t *testing.T, e *env, page, action string) {
	t.Helper()
	c := e.client(t, e.read)
	code, body := c.get(page)
	if code != http.StatusOK {
		t.Fatalf("GET %s (read key): got HTTP %d", page, code)
	}
	if strings.Contains(body, `action="`+action+`"`) {
		t.Errorf("GET %s (read key): the page offers %s", page, action)
	}
	if code, _ := c.post(action, url.Values{}); code != http.StatusForbidden {
		t.Errorf("POST %s (read key): got HTTP %d, want 403", action, code)
	}
}

func TestAlertsPage(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.client(t, e.write)
	code, body := c.get("/alerts")
	if code != http.StatusOK {
		t.Fatalf("GET /alerts: got HTTP %d", code)
	}
	mustContain(t, "alerts", body, "No alerts", `action="/alerts/settings"`, `id="s-expiry"`, `for="s-expiry"`)
	if code, body := c.get("/alerts?status=active&type=ssl_expiry"); code != http.StatusOK || !strings.Contains(body, `value="active" selected`) {
		t.Errorf("filtered: got HTTP %d", code)
	}
	if code, _ := c.get("/alerts?page=x"); code != http.StatusBadRequest {
		t.Errorf("bad page: got HTTP %d, want 400", code)
	}

	c.get("/alerts")
	code, loc := c.post("/alerts/settings", url.Values{"expiry_thresholds_days": {"45, 10"},
		"domain_expiry_thresholds_days": {"60"}, "scan_failing_after": {"4"}, "expiry_metrics": {"on"}})
	if code != http.StatusSeeOther || loc != "/alerts" {
		t.Fatalf("save settings: got HTTP %d %s", code, loc)
	}
	engine, err := alerts.New(alerts.Config{}, e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	st, err := engine.Settings(context.Background(), e.tenant)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.ExpiryThresholdsDays) != 2 || st.ScanFailingAfter != 4 || !st.ExpiryMetrics {
		t.Errorf("settings stored: got %+v", st)
	}
	_, body = c.get("/alerts")
	mustContain(t, "after save", body, "Alert settings saved", `value="45, 10"`)

	// A value the store refuses is flashed, not stored.
	code, _ = c.post("/alerts/settings", url.Values{"expiry_thresholds_days": {"0"},
		"domain_expiry_thresholds_days": {"60"}, "scan_failing_after": {"4"}})
	if code != http.StatusSeeOther {
		t.Errorf("bad settings: got HTTP %d, want 303", code)
	}
	_, body = c.get("/alerts")
	mustContain(t, "bad settings", body, "flash-error", `value="45, 10"`)

	readOnlyRefused(t, e, "/alerts", "/alerts/settings")

	// Alerts raised by scans, filtered by kind and status.
	soonID, selfID := e.addDomain(t, "soon.example.com", 443), e.addDomain(t, "self.example.com", 443)
	now := time.Now()
	e.scan(t, soonID, "soon.example.com", now, scanResult(now.Add(10*24*time.Hour), true))
	e.scan(t, selfID, "self.example.com", now.Add(time.Second), scanResult(now.Add(90*24*time.Hour), false))
	_, body = c.get("/alerts")
	mustContain(t, "alerts", body, "soon.example.com", "self.example.com", "ssl_expiry", "chain_invalid", "2 alerts")
	_, body = c.get("/alerts?type=chain_invalid")
	mustContain(t, "chain_invalid", body, "self.example.com", "1 alerts match")
	if strings.Contains(body, "soon.example.com") {
		t.Error("filter by kind: lists another kind")
	}
	if _, body = c.get("/alerts?status=resolved"); !strings.Contains(body, "0 alerts match") {
		t.Error("filter by status: lists active alerts as resolved")
	}
	// Another tenant sees none.
	_, _, otherWrite := e.newTenant(t, "bob@example.com")
	_, body = e.client(t, otherWrite).get("/alerts")
	mustContain(t, "other tenant", body, "No alerts")
}

// scan feeds a scan of the env's domain id (named host:443) through a
// projector, which evaluates its alerts, as an agent's scan would.
func (e *env) scan(t testing.TB, id, host string, finished time.Time, results ...events.IPResult) {
	t.Helper()
	job := uuid.New()
	ev, err := events.NewWithID(events.ScanEventID(job, "eu"), events.ScanCompleted, e.tenant, id, events.ScanCompletedV1{
		JobID: job, DomainID: id, Host: host, Port: 443, Region: "eu",
		StartedAt: finished.Add(-time.Second), FinishedAt: finished, Results: results,
	})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := alerts.New(alerts.Config{}, e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	p, err := projector.New(projector.Config{Consumer: "test", Evaluator: eng}, e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(context.Background(), ev); err != nil {
		t.Fatalf("apply scan: %v", err)
	}
}

// scanResult is one address's result with a certificate expiring at
// notAfter.
func scanResult(notAfter time.Time, chainValid bool) events.IPResult {
	return events.IPResult{IP: "192.0.2.1", Outcome: events.OutcomeOK, CertificateFound: true, LeafSHA256: "aa",
		NotBefore: notAfter.AddDate(-1, 0, 0), NotAfter: notAfter, Issuer: "CN=Lab CA", KeyType: "ECDSA", KeyBits: 256,
		SignatureAlgorithm: "ECDSA-SHA256", ChainValid: chainValid, HostnameValid: true, TLSVersion: "TLS 1.3"}
}

func TestChannelsPage(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.client(t, e.write)
	if code, body := c.get("/channels"); code != http.StatusOK || !strings.Contains(body, "No channels") {
		t.Fatalf("GET /channels: got HTTP %d", code)
	}
	code, _ := c.post("/channels/add", url.Values{"type": {"email"}, "name": {"On call"}, "to": {"ops@example.com, dev@example.com"},
		"min_severity": {"warning"}})
	if code != http.StatusSeeOther {
		t.Fatalf("add: got HTTP %d", code)
	}
	_, body := c.get("/channels")
	// Both recipients are pending until their owners confirm them.
	mustContain(t, "after add", body, "Channel added: On call", "ops@example.com <span class=\"tag\"", "dev@example.com <span class=\"tag\"",
		">unconfirmed<", "Resend confirmation", "Send test")
	id := between(body, `<tr id="ch-`, `"`)
	if id == "" {
		t.Fatal("no channel row")
	}
	if code, _ := c.post("/channels/"+id+"/confirmations", url.Values{"address": {"dev@example.com"}}); code != http.StatusSeeOther {
		t.Fatalf("resend confirmation: got HTTP %d", code)
	}
	if !e.streamHas(t, events.ConfirmationRequested, id) {
		t.Errorf("resend confirmation: no %s event for %s", events.ConfirmationRequested, id)
	}
	_, body = c.get("/channels")
	mustContain(t, "after resend", body, "Confirmation email queued for dev@example.com")
	if code, _ := c.post("/channels/"+id+"/test", nil); code != http.StatusSeeOther {
		t.Fatalf("test: got HTTP %d", code)
	}
	if !e.streamHas(t, events.ChannelTestRequested, id) {
		t.Errorf("send test: no %s event for %s", events.ChannelTestRequested, id)
	}
	_, body = c.get("/channels")
	mustContain(t, "after test", body, "Test notification queued")

	// A bad channel is explained.
	c.post("/channels/add", url.Values{"type": {"webhook"}, "name": {"x"}, "url": {"http://169.254.169.254/"}})
	_, body = c.get("/channels")
	mustContain(t, "bad webhook", body, "flash-error", "allow-webhook-targets")

	readOnlyRefused(t, e, "/channels", "/channels/"+id+"/delete")

	// Another tenant's channel is not found.
	other, _, otherWrite := e.newTenant(t, "bob@example.com")
	_ = other
	oc := e.client(t, otherWrite)
	oc.get("/channels")
	if code, _ := oc.post("/channels/"+id+"/delete", nil); code != http.StatusSeeOther {
		t.Errorf("other tenant delete: got HTTP %d", code)
	}
	_, body = oc.get("/channels")
	mustContain(t, "other tenant", body, "flash-error")

	c.get("/channels")
	if code, _ := c.post("/channels/"+id+"/delete", nil); code != http.StatusSeeOther {
		t.Fatalf("delete: got HTTP %d", code)
	}
	_, body = c.get("/channels")
	mustContain(t, "after delete", body, "Channel deleted", "No channels")

	// A Slack URL is the credential to post into the tenant's chat: the
	// write key's page shows it whole, the read key's redacted.
	c.get("/channels")
	c.post("/channels/add", url.Values{"type": {"slack"}, "name": {"chat"}, "url": {"https://hooks.slack.com/services/T0/B0/S3CRET"}})
	_, body = c.get("/channels")
	mustContain(t, "write key's slack channel", body, "https://hooks.slack.com/services/T0/B0/S3CRET")
	_, body = e.client(t, e.read).get("/channels")
	mustContain(t, "read key's slack channel", body, "https://hooks.slack.com/services/...")
	if strings.Contains(body, "S3CRET") {
		t.Errorf("a read key's channels page shows the Slack URL's secret path")
	}
}

// between returns the text of s between the first from and the next to.
func between(s, from, to string) string {
	_, after, ok := strings.Cut(s, from)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(after, to)
	return v
}

// auditSink copies the env's events into ClickHouse until the test ends.
func auditSink(t *testing.T, e *env) {
	t.Helper()
	sk, err := sink.New(sink.Config{Consumer: "test", FlushInterval: 20 * time.Millisecond}, e.rdb, e.ch, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = sk.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// waitAudit reads /audit until it lists want, or fails.
func waitAudit(t *testing.T, c *client, path string, wants ...string) string {
	t.Helper()
	return waitAuditRows(t, c, path, 0, wants...)
}

// waitAuditRows is waitAudit that also waits for at least rows records:
// the sink stores them asynchronously, not all in one batch.
func waitAuditRows(t *testing.T, c *client, path string, rows int, wants ...string) string {
	t.Helper()
	var body string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var code int
		if code, body = c.get(path); code != http.StatusOK {
			t.Fatalf("GET %s: got HTTP %d", path, code)
		}
		all := strings.Count(body, "<tr>")-1 >= rows
		for _, w := range wants {
			all = all && strings.Contains(body, w)
		}
		if all {
			return body
		}
	}
	mustContain(t, path, body, wants...)
	return body
}

func TestCertificatePagesAndAudit(t *testing.T) {
	e := moreEnv(t)
	auditSink(t, e)
	certID := e.issueClientCert(t, "alice-laptop")
	e.issueManaged(t, "shop.example.com")
	w := e.client(t, e.write)
	r := e.client(t, e.read)

	// Client certificates.
	code, body := w.get("/client-certs")
	if code != http.StatusOK {
		t.Fatalf("GET /client-certs: got HTTP %d", code)
	}
	mustContain(t, "client certs (write)", body, "alice-laptop", "/client-certs/"+certID+"/download/key", "/client-certs/"+certID+"/revoke", `action="/client-certs/create"`)
	_, body = r.get("/client-certs")
	mustContain(t, "client certs (read)", body, "alice-laptop", "/client-certs/"+certID+"/download/crt")
	if strings.Contains(body, "/download/key") || strings.Contains(body, "/revoke") {
		t.Error("client certs (read): offers the private key or revoke")
	}
	resp := postRaw(t, r, "/client-certs/"+certID+"/download/crt")
	if resp.code != http.StatusOK || !strings.Contains(resp.body, "BEGIN CERTIFICATE") || !strings.Contains(resp.disposition, certID+".crt") {
		t.Errorf("download crt (read): got HTTP %d %q", resp.code, resp.disposition)
	}
	if resp := postRaw(t, r, "/client-certs/"+certID+"/download/key"); resp.code != http.StatusForbidden || strings.Contains(resp.body, "PRIVATE KEY") {
		t.Errorf("download key (read): got HTTP %d, want 403", resp.code)
	}
	w.get("/client-certs")
	if resp := postRaw(t, w, "/client-certs/"+certID+"/download/key"); resp.code != http.StatusOK || !strings.Contains(resp.body, "PRIVATE KEY") {
		t.Errorf("download key (write): got HTTP %d", resp.code)
	}
	if code, _ := r.post("/client-certs/"+certID+"/revoke", nil); code != http.StatusForbidden {
		t.Errorf("revoke (read): got HTTP %d, want 403", code)
	}
	w.get("/client-certs")
	w.post("/client-certs/create", url.Values{"common_name": {""}, "cert_usage": {"vpn"}})
	_, body = w.get("/client-certs")
	mustContain(t, "issue without a name", body, "flash-error")
	if code, _ := w.post("/client-certs/"+certID+"/revoke", url.Values{"reason": {"keyCompromise"}}); code != http.StatusSeeOther {
		t.Errorf("revoke: got HTTP %d", code)
	}
	_, body = w.get("/client-certs")
	mustContain(t, "after revoke", body, "Certificate revoked: "+certID, "keyCompromise")
	w.post("/client-certs/"+certID+"/revoke", nil)
	_, body = w.get("/client-certs")
	mustContain(t, "revoke twice", body, "Certificate already revoked")

	// Managed certificates.
	_, body = w.get("/managed-certs")
	mustContain(t, "managed (write)", body, "shop.example.com", "/download/privkey.pem", "/managed-certs/shop.example.com/renew")
	_, body = r.get("/managed-certs")
	mustContain(t, "managed (read)", body, "shop.example.com", "/managed-certs/shop.example.com/download/fullchain.pem")
	if strings.Contains(body, "privkey.pem") || strings.Contains(body, "/renew") {
		t.Error("managed (read): offers the private key or renew")
	}
	if resp := postRaw(t, r, "/managed-certs/shop.example.com/download/fullchain.pem"); resp.code != http.StatusOK ||
		strings.Count(resp.body, "BEGIN CERTIFICATE") != 2 {
		t.Errorf("fullchain (read): got HTTP %d, %d certificates", resp.code, strings.Count(resp.body, "BEGIN CERTIFICATE"))
	}
	if resp := postRaw(t, r, "/managed-certs/shop.example.com/download/privkey.pem"); resp.code != http.StatusForbidden {
		t.Errorf("privkey (read): got HTTP %d, want 403", resp.code)
	}
	w.get("/managed-certs")
	if resp := postRaw(t, w, "/managed-certs/shop.example.com/download/privkey.pem"); resp.code != http.StatusOK || !strings.Contains(resp.body, "PRIVATE KEY") {
		t.Errorf("privkey (write): got HTTP %d", resp.code)
	}
	if code, _ := w.post("/managed-certs/shop.example.com/renew", nil); code != http.StatusSeeOther {
		t.Errorf("renew: got HTTP %d", code)
	}
	_, body = w.get("/managed-certs")
	mustContain(t, "after renew", body, "Renewal requested: shop.example.com", "(renewing)")
	if code, _ := r.post("/managed-certs/shop.example.com/delete", nil); code != http.StatusForbidden {
		t.Errorf("delete (read): got HTTP %d, want 403", code)
	}
	w.get("/managed-certs")
	if code, _ := w.post("/managed-certs/shop.example.com/delete", nil); code != http.StatusSeeOther {
		t.Errorf("delete: got HTTP %d", code)
	}
	_, body = w.get("/managed-certs")
	mustContain(t, "after delete", body, "Certificate removed: shop.example.com", "No managed certificates")

	// Every download, revoke and refusal above is in the audit log.
	body = waitAuditRows(t, w, "/audit?operation=download", 6, "privkey.pem", `&#34;type&#34;:&#34;key&#34;`, "failure", "Downloading a private key needs a key with write")
	if n := strings.Count(body, "<tr>") - 1; n != 6 {
		t.Errorf("audit: got %d download records, want 6", n)
	}
	waitAudit(t, r, "/audit?status=failure", "Certificate already revoked", "revoke")
	waitAudit(t, w, "/audit?operation=delete", "shop.example.com")
	if code, _ := w.get("/audit?status=maybe"); code != http.StatusBadRequest {
		t.Errorf("audit bad status: got HTTP %d, want 400", code)
	}
	// Another tenant sees none of it.
	_, _, otherWrite := e.newTenant(t, "bob@example.com")
	_, body = e.client(t, otherWrite).get("/audit")
	mustContain(t, "other tenant's audit", body, "No audit records")
}

type rawResp struct {
	code              int
	body, disposition string
}

// postRaw posts an empty form (with the CSRF token) and returns the
// answer as it is: a download.
func postRaw(t *testing.T, c *client, path string) rawResp {
	t.Helper()
	resp, err := c.http.PostForm(c.base+path, url.Values{"csrf": {c.csrf}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return rawResp{code: resp.StatusCode, body: b.String(), disposition: resp.Header.Get("Content-Disposition")}
}

// TestAuditFilterRefused: a filter GET /api/audit refuses (an operation
// or resource type no record has, a bad status or time) is the same 400
// on the dashboard's audit page, its reason in the error flash naming the
// value given and the values allowed, not an empty list.
func TestAuditFilterRefused(t *testing.T) {
	e := newEnv(t, envOptions{ClickHouse: true})
	c := e.client(t, e.read)
	flashRE := regexp.MustCompile(`<p class="flash flash-error" role="alert">([^<]*)</p>`)
	ops := "auto_renew, batch, create, delete, download, failed_auth, get, list, renew, revoke, stats"
	for _, tc := range []struct {
		name, query, want string
	}{
		{"unknown operation", "operation=nope", "operation must be one of " + ops + "; got &#34;nope&#34;"},
		{"operation as markup", "operation=%3Cb%3Ex", "; got &#34;&lt;b&gt;x&#34;"},
		{"unknown resource type", "resource_type=certificates",
			"resource_type must be one of audit_log, certificate, managed_certificate; got &#34;certificates&#34;"},
		{"bad status", "status=maybe", "status must be &#34;success&#34; or &#34;failure&#34;, got &#34;maybe&#34;"},
		{"bad until", "until=yesterday", "until must be an RFC 3339 time such as 2026-01-02T15:04:05Z, got &#34;yesterday&#34;"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := c.get("/audit?" + tc.query)
			m := flashRE.FindStringSubmatch(body)
			if code != http.StatusBadRequest || m == nil || !strings.HasSuffix(m[1], tc.want) || strings.Contains(body, "No audit records") {
				t.Errorf("GET /audit?%s: got HTTP %d, flash %q, want 400, no list and a flash ending %q", tc.query, code, m, tc.want)
			}
		})
	}
	if code, body := c.get("/audit?operation=failed_auth&status=failure"); code != http.StatusOK || !strings.Contains(body, "No audit records match") {
		t.Errorf("a known operation: got HTTP %d, want 200 and an empty list", code)
	}
}
