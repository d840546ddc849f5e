package managedcert

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/guard"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/testenv"
)

const testPassphrase = "correct horse battery staple"

var loopback = guard.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}

func newStore(t *testing.T, cfg Config) (*Store, *redis.Client) {
	t.Helper()
	rdb := testenv.Redis(t).Client(t)
	if cfg.Passphrase == "" {
		cfg.Passphrase = testPassphrase
	}
	st, err := New(cfg, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	return st, rdb
}

var labCreds = map[string]string{
	"RFC2136_NAMESERVER": "127.0.0.1:5353", "RFC2136_TSIG_KEY": "lab.", "RFC2136_TSIG_SECRET": "c2VjcmV0LXNlY3JldC1zZWNyZXQ=",
	"RFC2136_TSIG_ALGORITHM": "hmac-sha256.",
}

// eventNames returns the names of the events recorded so far, oldest first.
func eventNames(t *testing.T, rdb *redis.Client) []string {
	t.Helper()
	all, err := events.ReadAllEvents(context.Background(), rdb)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ev := range all {
		out = append(out, ev.Name)
	}
	return out
}

// allValues returns every string value stored in Redis (strings, hashes,
// sets, zsets, streams), to look for secrets in clear.
func allValues(t *testing.T, rdb *redis.Client) string {
	t.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, k := range keys {
		switch rdb.Type(ctx, k).Val() {
		case "string":
			b.WriteString(rdb.Get(ctx, k).Val())
		case "hash":
			for f, v := range rdb.HGetAll(ctx, k).Val() {
				b.WriteString(f + "=" + v + "\n")
			}
		case "stream":
			for _, m := range rdb.XRange(ctx, k, "-", "+").Val() {
				for f, v := range m.Values {
					b.WriteString(f + "=" + v.(string) + "\n")
				}
			}
		}
	}
	return b.String()
}

func TestDNSAccounts(t *testing.T) {
	ctx := context.Background()
	st, rdb := newStore(t, Config{DNSTargets: loopback})

	a, err := st.PutDNSAccount(ctx, "t1", ProviderRFC2136, "lab", labCreds)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"RFC2136_NAMESERVER", "RFC2136_TSIG_ALGORITHM", "RFC2136_TSIG_KEY", "RFC2136_TSIG_SECRET"}
	if strings.Join(a.CredentialNames, ",") != strings.Join(want, ",") {
		t.Errorf("credential names: got %v, want %v", a.CredentialNames, want)
	}
	if v := allValues(t, rdb); strings.Contains(v, labCreds["RFC2136_TSIG_SECRET"]) {
		t.Errorf("the TSIG secret is stored in clear")
	}
	list, err := st.ListDNSAccounts(ctx, "t1")
	if err != nil || len(list) != 1 || list[0].Credentials != nil {
		t.Fatalf("list: got %+v, %v; want one account without credentials", list, err)
	}
	if other, _ := st.ListDNSAccounts(ctx, "t2"); len(other) != 0 {
		t.Errorf("another tenant lists %d accounts, want 0", len(other))
	}
	if _, err := st.OpenDNSAccount(ctx, "t2", ProviderRFC2136, "lab"); !errors.Is(err, ErrNotFound) {
		t.Errorf("another tenant opens the account: got %v, want ErrNotFound", err)
	}
	opened, err := st.OpenDNSAccount(ctx, "t1", ProviderRFC2136, "lab")
	if err != nil || opened.Credentials["RFC2136_TSIG_SECRET"] != labCreds["RFC2136_TSIG_SECRET"] {
		t.Fatalf("open: got %v, %v", opened.Credentials, err)
	}

	// DNSUPDATE_ names are stored as RFC2136_ names.
	a, err = st.PutDNSAccount(ctx, "t1", ProviderRFC2136, "alias", map[string]string{"DNSUPDATE_NAMESERVER": "127.0.0.1"})
	if err != nil || a.CredentialNames[0] != "RFC2136_NAMESERVER" {
		t.Errorf("alias: got %v, %v; want RFC2136_NAMESERVER", a.CredentialNames, err)
	}

	// A certificate names the account: it cannot be deleted.
	if _, err := st.Create(ctx, "t1", CreateRequest{Domain: "a.lab.test", DNSProvider: ProviderRFC2136, AccountID: "lab"}); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteDNSAccount(ctx, "t1", ProviderRFC2136, "lab"); !errors.Is(err, ErrInUse) {
		t.Errorf("delete of a used account: got %v, want ErrInUse", err)
	}
	if _, err := st.Delete(ctx, "t1", "a.lab.test", false); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteDNSAccount(ctx, "t1", ProviderRFC2136, "lab"); err != nil {
		t.Errorf("delete: %v", err)
	}
	if err := st.DeleteDNSAccount(ctx, "t1", ProviderRFC2136, "lab"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: got %v, want ErrNotFound", err)
	}
	names := strings.Join(eventNames(t, rdb), " ")
	for _, n := range []string{events.DNSAccountAdded, events.DNSAccountRemoved} {
		if !strings.Contains(names, n) {
			t.Errorf("events %s: no %s", names, n)
		}
	}
}

func TestPutDNSAccountRefuses(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t, Config{}) // default policy: loopback refused
	for _, tc := range []struct {
		name, provider string
		creds          map[string]string
		want           string
	}{
		{"loopback nameserver", ProviderRFC2136, map[string]string{"RFC2136_NAMESERVER": "127.0.0.1:53"}, "--allow-dns-targets"},
		{"metadata endpoint", ProviderHTTPReq, map[string]string{"HTTPREQ_ENDPOINT": "http://169.254.169.254/"}, "--allow-dns-targets"},
		{"private nameserver", ProviderRFC2136, map[string]string{"RFC2136_NAMESERVER": "10.1.2.3"}, "--allow-dns-targets"},
		{"exec", "exec", map[string]string{"EXEC_PATH": "/bin/sh"}, "operator"},
		{"unknown provider", "ovh", nil, "unknown DNS provider"},
		{"tsig file", ProviderRFC2136, map[string]string{"RFC2136_NAMESERVER": "ns.example.com", "RFC2136_TSIG_FILE": "/etc/passwd"}, "its own files"},
		{"route53 profile", ProviderRoute53, map[string]string{"AWS_PROFILE": "default"}, "its own files"},
		{"route53 no keys", ProviderRoute53, map[string]string{"AWS_REGION": "us-east-1"}, "needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"},
		{"cloudflare no token", ProviderCloudflare, map[string]string{"CLOUDFLARE_EMAIL": "a@b.c"}, "needs"},
		{"key without secret", ProviderRFC2136, map[string]string{"RFC2136_NAMESERVER": "ns.example.com", "RFC2136_TSIG_KEY": "k."}, "go together"},
		{"bad algorithm", ProviderRFC2136, map[string]string{"RFC2136_NAMESERVER": "ns.example.com", "RFC2136_TSIG_ALGORITHM": "md5"}, "not one of"},
		{"newline", ProviderHTTPReq, map[string]string{"HTTPREQ_ENDPOINT": "https://dns.example.com/\nX: y"}, "one line"},
		{"bad account id", ProviderRFC2136, map[string]string{"RFC2136_NAMESERVER": "ns.example.com"}, "account_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "acct"
			if tc.name == "bad account id" {
				id = "../x"
			}
			_, err := st.PutDNSAccount(ctx, "t1", tc.provider, id, tc.creds)
			var inv *InvalidError
			if !errors.As(err, &inv) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an invalid request mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := st.PutDNSAccount(ctx, "t1", ProviderCloudflare, "cf", map[string]string{"CF_DNS_API_TOKEN": "tok"}); err != nil {
		t.Errorf("cloudflare token: %v", err)
	}
}

// selfSigned returns a self-signed certificate (its issuer is name) for name valid from nb for d, and its key.
func selfSigned(t *testing.T, name string, nb time.Time, d time.Duration) ([]byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(nb.UnixNano()), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, NotBefore: nb, NotAfter: nb.Add(d)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func TestCertificateLifecycle(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	st, rdb := newStore(t, Config{DNSTargets: loopback, Now: clock, Quotas: quota.Limits{quota.ManagedCerts: 2}})
	if _, err := st.PutDNSAccount(ctx, "t1", ProviderRFC2136, "lab", labCreds); err != nil {
		t.Fatal(err)
	}
	tag := events.TenantTag("t1")

	if _, err := st.Create(ctx, "t1", CreateRequest{Domain: "a.lab.test", DNSProvider: ProviderRFC2136, AccountID: "nope"}); err == nil ||
		!strings.Contains(err.Error(), "no DNS account") {
		t.Errorf("create with a missing account: got %v", err)
	}
	c, err := st.Create(ctx, "t1", CreateRequest{Domain: "a.lab.test", SANs: []string{"a.lab.test", "*.a.lab.test", "*.a.lab.test"},
		DNSProvider: ProviderRFC2136, AccountID: "lab"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != StatusPending || c.KeyType != KeyEC256 || len(c.SANs) != 1 {
		t.Errorf("created: got %+v; want pending, ec256, one SAN", c)
	}
	if _, err := st.Create(ctx, "t1", CreateRequest{Domain: "a.lab.test", DNSProvider: ProviderRFC2136, AccountID: "lab"}); !errors.Is(err, ErrExists) {
		t.Errorf("second create: got %v, want ErrExists", err)
	}
	if _, err := st.Create(ctx, "t1", CreateRequest{Domain: "b.lab.test", DNSProvider: ProviderRFC2136, AccountID: "lab"}); err != nil {
		t.Fatal(err)
	}
	var ex *quota.Exceeded
	if _, err := st.Create(ctx, "t1", CreateRequest{Domain: "c.lab.test", DNSProvider: ProviderRFC2136, AccountID: "lab"}); !errors.As(err, &ex) {
		t.Errorf("third create over a quota of 2: got %v, want quota exceeded", err)
	}
	due, err := st.Due(ctx, tag, now, 10)
	if err != nil || len(due) != 2 {
		t.Fatalf("due: got %v, %v; want both domains", due, err)
	}
	if _, err := st.Get(ctx, "t2", "a.lab.test"); !errors.Is(err, ErrNotFound) {
		t.Errorf("another tenant gets it: %v", err)
	}
	if _, _, err := st.OpenMaterial(ctx, "t1", "a.lab.test"); !errors.Is(err, ErrNotIssued) {
		t.Errorf("material of a pending certificate: got %v, want ErrNotIssued", err)
	}

	// A failure before any issuance: failed, retried later.
	c, err = st.SaveFailed(ctx, "t1", "a.lab.test", "dns: NOTAUTH", now.Add(time.Minute))
	if err != nil || c.Status != StatusFailed || c.Attempt != 1 || c.Error != "dns: NOTAUTH" {
		t.Fatalf("failed: got %+v, %v", c, err)
	}
	if due, _ := st.Due(ctx, tag, now, 10); len(due) != 1 {
		t.Errorf("due after a failure: got %v, want only b", due)
	}

	certPEM, keyPEM := selfSigned(t, "a.lab.test", now, 90*24*time.Hour)
	m, leaf, err := ParseMaterial(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	c, err = st.SaveIssued(ctx, "t1", "a.lab.test", m, leaf, now.Add(60*24*time.Hour), "lifetime")
	if err != nil || c.Status != StatusIssued || c.Attempt != 0 || c.Error != "" || c.Issuer != "a.lab.test" || c.SHA256 == "" {
		t.Fatalf("issued: got %+v, %v", c, err)
	}
	if strings.Contains(allValues(t, rdb), string(keyPEM)) {
		t.Errorf("the private key is stored in clear")
	}
	_, got, err := st.OpenMaterial(ctx, "t1", "a.lab.test")
	if err != nil || string(got.PrivateKeyPEM) != string(keyPEM) || got.CertPEM != string(certPEM) {
		t.Fatalf("material: got %v; want the key and certificate saved", err)
	}
	if _, _, err := st.OpenMaterial(ctx, "t2", "a.lab.test"); !errors.Is(err, ErrNotFound) {
		t.Errorf("another tenant opens the material: %v", err)
	}

	// Renewal asked for: due now, renewing, still issued.
	c, err = st.RequestRenew(ctx, "t1", "a.lab.test")
	if err != nil || !c.Renewing || c.Status != StatusIssued {
		t.Errorf("renew: got %+v, %v", c, err)
	}
	certPEM2, keyPEM2 := selfSigned(t, "a.lab.test", now.Add(time.Hour), 90*24*time.Hour)
	m2, leaf2, _ := ParseMaterial(certPEM2, keyPEM2)
	if c, err = st.SaveIssued(ctx, "t1", "a.lab.test", m2, leaf2, now.Add(61*24*time.Hour), "lifetime"); err != nil || c.Renewing {
		t.Fatalf("renewed: got %+v, %v", c, err)
	}

	// Delete with revoke: marked and left to the worker; then removed.
	if c, err = st.Delete(ctx, "t1", "a.lab.test", true); err != nil || !c.Deleting {
		t.Fatalf("delete with revoke: got %+v, %v", c, err)
	}
	if err := st.Remove(ctx, "t1", "a.lab.test", true); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(ctx, "t1", "a.lab.test"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after remove: %v", err)
	}
	// Delete without revoke: gone at once.
	if _, err := st.Delete(ctx, "t1", "b.lab.test", false); err != nil {
		t.Fatal(err)
	}
	if n, _ := st.Count(ctx, "t1"); n != 0 {
		t.Errorf("count after deletes: got %d, want 0", n)
	}
	if due, _ := st.Due(ctx, tag, now.Add(365*24*time.Hour), 10); len(due) != 0 {
		t.Errorf("schedule after deletes: got %v, want empty", due)
	}
	want := []string{events.DNSAccountAdded, events.CertificateRequested, events.CertificateRequested, events.CertificateFailed,
		events.CertificateIssued, events.CertificateRequested, events.CertificateRenewed, events.CertificateDeleted, events.CertificateDeleted}
	if got := eventNames(t, rdb); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("events:\n got %v\nwant %v", got, want)
	}
}

func TestCountOrder(t *testing.T) {
	ctx := context.Background()
	st, _ := newStore(t, Config{Quotas: quota.Limits{quota.CertOrders: 2}})
	for i := range 2 {
		if err := st.CountOrder(ctx, "t1"); err != nil {
			t.Fatalf("order %d: %v", i+1, err)
		}
	}
	var ex *quota.Exceeded
	if err := st.CountOrder(ctx, "t1"); !errors.As(err, &ex) || ex.Limit != 2 {
		t.Errorf("third order: got %v, want quota of 2 exceeded", err)
	}
	if err := st.CountOrder(ctx, "t2"); err != nil {
		t.Errorf("another tenant's order: %v", err)
	}
}

func TestACMEAccount(t *testing.T) {
	ctx := context.Background()
	st, rdb := newStore(t, Config{})
	const dir = "https://127.0.0.1:14000/dir"
	if _, err := st.ACMEAccount(ctx, "t1", dir); !errors.Is(err, ErrNotFound) {
		t.Fatalf("no account yet: got %v", err)
	}
	_, keyPEM := selfSigned(t, "x", time.Now(), time.Hour)
	if err := st.PutACMEAccount(ctx, "t1", dir, ACMEAccount{Email: "a@example.com", URI: "https://ca/acct/1", KeyPEM: keyPEM}); err != nil {
		t.Fatal(err)
	}
	a, err := st.ACMEAccount(ctx, "t1", dir)
	if err != nil || string(a.KeyPEM) != string(keyPEM) || a.URI != "https://ca/acct/1" {
		t.Fatalf("got %+v, %v", a, err)
	}
	if _, err := st.ACMEAccount(ctx, "t1", dir+"2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("another directory: got %v", err)
	}
	if strings.Contains(allValues(t, rdb), string(keyPEM)) {
		t.Errorf("the account key is stored in clear")
	}
}
