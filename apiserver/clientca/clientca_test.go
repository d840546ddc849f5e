package clientca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/seal"
	"github.com/certfleet/certfleet/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const (
	testPass  = "correct horse battery staple"
	publicURL = "https://certfleet.example.com"
	tenantA   = "tenant-a"
	tenantB   = "tenant-b"
)

// clock is a settable test clock.
type clock struct{ ns atomic.Int64 }

func newClock() *clock { c := &clock{}; c.ns.Store(time.Now().UnixNano()); return c }

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func newStore(t *testing.T, rdb *redis.Client, pass string, now func() time.Time) *Store {
	t.Helper()
	s, err := New(Config{Passphrase: pass, PublicURL: publicURL, Now: now}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatalf("new store: %v", err)
	}
	return s
}

// initStore returns a store with a fresh ECDSA CA.
func initStore(t *testing.T) (*Store, *redis.Client) {
	t.Helper()
	rdb := testenv.Redis(t).Client(t)
	s := newStore(t, rdb, testPass, nil)
	if _, err := s.Init(context.Background(), ""); err != nil {
		t.Fatalf("init: %v", err)
	}
	return s, rdb
}

func streamEvents(t *testing.T, rdb *redis.Client) []events.Envelope {
	t.Helper()
	evs, err := events.ReadAll(context.Background(), rdb, events.CAStream)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func countEvents(evs []events.Envelope, name string) int {
	n := 0
	for _, e := range evs {
		if e.Name == name {
			n++
		}
	}
	return n
}

func parsePEMCert(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	c, err := parseCertPEM(b)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	return c
}

// verifyClient checks cert chains to the CA for client authentication.
func verifyClient(t *testing.T, caPEM, certPEM []byte, at time.Time) error {
	t.Helper()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("CA PEM does not parse")
	}
	_, err := parsePEMCert(t, certPEM).Verify(x509.VerifyOptions{
		Roots: roots, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return err
}

func download(t *testing.T, s *Store, tenant, id, kind string) []byte {
	t.Helper()
	b, err := s.Download(context.Background(), tenant, id, kind)
	if err != nil {
		t.Fatalf("download %s of %s: %v", kind, id, err)
	}
	return b
}

func TestInitOnceAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	const replicas = 4
	stores := make([]*Store, replicas)
	for i := range stores {
		stores[i] = newStore(t, rdb, testPass, nil)
	}
	got := make([]*Authority, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Go(func() { got[i], errs[i] = s.Ensure(ctx, KeyRSA3072) })
	}
	wg.Wait()
	for i := range got {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		if !bytes.Equal(got[i].PEM, got[0].PEM) {
			t.Errorf("replica %d has another CA than replica 0", i)
		}
	}
	if n := countEvents(streamEvents(t, rdb), events.CACreated); n != 1 {
		t.Errorf("ca.created events: got %d, want 1", n)
	}
	ca := got[0].Cert
	if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 || len(ca.SubjectKeyId) == 0 {
		t.Errorf("CA certificate: IsCA %v, key usage %b, SKI %x: want a signing CA with an SKI", ca.IsCA, ca.KeyUsage, ca.SubjectKeyId)
	}
	if kt := keyTypeOf(ca.PublicKey); kt != KeyRSA3072 {
		t.Errorf("key type: got %s, want %s", kt, KeyRSA3072)
	}
	if _, err := stores[1].Init(ctx, ""); !errors.Is(err, ErrCAExists) {
		t.Errorf("second init: got %v, want ErrCAExists", err)
	}
	if _, err := stores[1].Init(ctx, "dsa-1024"); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad key type: got %v, want ErrInvalid", err)
	}
	info, err := stores[2].Info(ctx)
	if err != nil || info.Source != "generated" || info.KeyType != KeyRSA3072 || !bytes.Equal(info.PEM, got[0].PEM) {
		t.Errorf("info: got %+v %v, want the generated rsa-3072 CA", info, err)
	}
}

func TestNoCA(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, testenv.Redis(t).Client(t), testPass, nil)
	if _, err := s.Authority(ctx); !errors.Is(err, ErrNoCA) {
		t.Errorf("authority: got %v, want ErrNoCA", err)
	}
	if _, err := s.Info(ctx); !errors.Is(err, ErrNoCA) {
		t.Errorf("info: got %v, want ErrNoCA", err)
	}
	if _, err := s.Create(ctx, tenantA, CreateRequest{CommonName: "x", GenerateKey: true}); !errors.Is(err, ErrNoCA) {
		t.Errorf("create: got %v, want ErrNoCA", err)
	}
}

func TestCreateWithGeneratedKey(t *testing.T) {
	ctx := context.Background()
	s, rdb := initStore(t)
	a, err := s.Authority(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Create(ctx, tenantA, CreateRequest{
		CommonName: "alice@example.com", Email: "alice@example.com", Organization: "ACME Corp",
		OrganizationalUnit: "Engineering", Usage: "api-mtls", DaysValid: 90, GenerateKey: true, Notes: "laptop",
	})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if !ValidID(c.ID) || !c.KeyGenerated || c.Revoked || !c.RenewalEnabled || c.RenewalThresholdDays != 30 {
		t.Errorf("record: got %+v, want a live generated-key certificate with renewal at 30 days", c)
	}
	if c.Serial.Sign() <= 0 || c.Serial.BitLen() > 127 {
		t.Errorf("serial: got %s (%d bits), want positive, at most 127 bits", c.Serial, c.Serial.BitLen())
	}
	if d := c.ExpiresAt.Sub(c.CreatedAt); d < 90*24*time.Hour-time.Second || d > 90*24*time.Hour+time.Second {
		t.Errorf("validity: got %s, want 90 days", d)
	}
	certPEM := download(t, s, tenantA, c.ID, DownloadCert)
	if err := verifyClient(t, a.PEM, certPEM, time.Now()); err != nil {
		t.Errorf("verify for client auth: %v", err)
	}
	cert := parsePEMCert(t, certPEM)
	checks := []struct {
		name      string
		got, want string
	}{
		{"CN", cert.Subject.CommonName, "alice@example.com"},
		{"O", strings.Join(cert.Subject.Organization, ","), "ACME Corp"},
		{"OU", strings.Join(cert.Subject.OrganizationalUnit, ","), "Engineering"},
		{"SAN email", strings.Join(cert.EmailAddresses, ","), "alice@example.com"},
		{"CRL DP", strings.Join(cert.CRLDistributionPoints, ","), publicURL + "/api/crl/download/der"},
		{"OCSP", strings.Join(cert.OCSPServer, ","), publicURL + "/ocsp"},
		{"AKI", hex.EncodeToString(cert.AuthorityKeyId), hex.EncodeToString(a.Cert.SubjectKeyId)},
		{"serial", cert.SerialNumber.String(), c.Serial.String()},
		{"sha256", sha256Hex(cert.Raw), c.SHA256},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %q, want %q", ch.name, ch.got, ch.want)
		}
	}
	if len(cert.SubjectKeyId) == 0 || cert.IsCA {
		t.Errorf("SKI %x, IsCA %v: want an SKI and not a CA", cert.SubjectKeyId, cert.IsCA)
	}
	key, err := parseKeyPEM(download(t, s, tenantA, c.ID, DownloadKey))
	if err != nil || !publicKeysEqual(cert.PublicKey, key.Public()) {
		t.Errorf("downloaded key: %v, or it does not match the certificate", err)
	}
	csrBlock, _ := pem.Decode(download(t, s, tenantA, c.ID, DownloadCSR))
	if csrBlock == nil || csrBlock.Type != "CERTIFICATE REQUEST" {
		t.Errorf("csr download: got %v, want a CERTIFICATE REQUEST", csrBlock)
	}
	if _, err := s.Download(ctx, tenantA, c.ID, "pfx"); !errors.Is(err, ErrInvalid) {
		t.Errorf("download pfx: got %v, want ErrInvalid", err)
	}
	got, err := s.Get(ctx, tenantA, c.ID)
	if err != nil || got.CommonName != c.CommonName || got.Notes != "laptop" || got.Usage != "api-mtls" ||
		got.Serial.Cmp(c.Serial) != 0 || !got.ExpiresAt.Equal(c.ExpiresAt) || got.KeyType != KeyECDSAP256 {
		t.Errorf("get: got %+v %v, want %+v", got, err, c)
	}
	bySerial, err := s.BySerial(ctx, c.Serial)
	if err != nil || bySerial.ID != c.ID {
		t.Errorf("by serial: got %+v %v, want %s", bySerial, err, c.ID)
	}
	if _, err := s.BySerial(ctx, big.NewInt(12345)); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown serial: got %v, want ErrNotFound", err)
	}
	evs := streamEvents(t, rdb)
	if n := countEvents(evs, events.ClientCertIssued); n != 1 {
		t.Fatalf("issued events: got %d, want 1", n)
	}
	for _, e := range evs {
		if e.Name != events.ClientCertIssued {
			continue
		}
		var p events.ClientCertIssuedV1
		if err := e.Decode(&p); err != nil || p.CertID != c.ID || p.Serial != c.Serial.String() || e.TenantID != tenantA {
			t.Errorf("issued event: got %+v (tenant %s) %v", p, e.TenantID, err)
		}
		if strings.Contains(string(e.Payload), "PRIVATE KEY") || strings.Contains(string(e.Payload), "v1.") {
			t.Errorf("issued event carries key material: %s", e.Payload)
		}
	}
}

func makeCSR(t *testing.T, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "from the csr"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestCreateWithCSR(t *testing.T) {
	ctx := context.Background()
	s, _ := initStore(t)
	a, _ := s.Authority(ctx)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csrPEM := makeCSR(t, key)
	c, err := s.Create(ctx, tenantA, CreateRequest{CommonName: "vpn-bob", Usage: "vpn", CSR: csrPEM})
	if err != nil {
		t.Fatalf("create with csr: %v", err)
	}
	cert := parsePEMCert(t, download(t, s, tenantA, c.ID, DownloadCert))
	if c.KeyGenerated || !publicKeysEqual(cert.PublicKey, key.Public()) || cert.Subject.CommonName != "vpn-bob" {
		t.Errorf("got key generated %v, CN %q, same key %v: want the CSR's key under the request's subject",
			c.KeyGenerated, cert.Subject.CommonName, publicKeysEqual(cert.PublicKey, key.Public()))
	}
	if err := verifyClient(t, a.PEM, download(t, s, tenantA, c.ID, DownloadCert), time.Now()); err != nil {
		t.Errorf("verify: %v", err)
	}
	if _, err := s.Download(ctx, tenantA, c.ID, DownloadKey); !errors.Is(err, ErrNoKey) {
		t.Errorf("key of a CSR certificate: got %v, want ErrNoKey", err)
	}

	// A CSR whose signature does not verify: flip a bit of the signature
	// (the last bytes of the DER).
	block, _ := pem.Decode(csrPEM)
	bad := bytes.Clone(block.Bytes)
	bad[len(bad)-3] ^= 0x01
	badPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: bad})
	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	tests := []struct {
		name string
		req  CreateRequest
		want string
	}{
		{"bad signature", CreateRequest{CommonName: "x", CSR: badPEM}, "signature"},
		{"weak key", CreateRequest{CommonName: "x", CSR: makeCSR(t, weak)}, "2048"},
		{"not a csr", CreateRequest{CommonName: "x", CSR: []byte("hello")}, "PEM"},
		{"no csr", CreateRequest{CommonName: "x"}, "csr is required"},
		{"csr and generate", CreateRequest{CommonName: "x", CSR: csrPEM, GenerateKey: true}, "must not be given"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Create(ctx, tenantA, tt.req)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
}

func TestCreateValidation(t *testing.T) {
	ctx := context.Background()
	s, rdb := initStore(t)
	no := false
	tests := []struct {
		name string
		req  CreateRequest
		want string // "" = accepted
	}{
		{"minimal", CreateRequest{CommonName: "a", GenerateKey: true}, ""},
		{"rsa key", CreateRequest{CommonName: "a", GenerateKey: true, KeyType: KeyRSA2048}, ""},
		{"no common name", CreateRequest{CommonName: "  ", GenerateKey: true}, "common_name is required"},
		{"long common name", CreateRequest{CommonName: strings.Repeat("a", 65), GenerateKey: true}, "at most 64"},
		{"control character", CreateRequest{CommonName: "a\nb", GenerateKey: true}, "control"},
		{"bad email", CreateRequest{CommonName: "a", Email: "not-an-email", GenerateKey: true}, "email"},
		{"named email", CreateRequest{CommonName: "a", Email: "Al <al@example.com>", GenerateKey: true}, "email"},
		{"days too many", CreateRequest{CommonName: "a", DaysValid: 3651, GenerateKey: true}, "days_valid"},
		{"days negative", CreateRequest{CommonName: "a", DaysValid: -1, GenerateKey: true}, "days_valid"},
		{"bad key type", CreateRequest{CommonName: "a", GenerateKey: true, KeyType: "ed448"}, "key_type"},
		{"threshold past validity", CreateRequest{CommonName: "a", DaysValid: 10, RenewalThresholdDays: 10, GenerateKey: true}, "renewal_threshold_days"},
		{"long notes", CreateRequest{CommonName: "a", Notes: strings.Repeat("n", 1001), GenerateKey: true}, "notes"},
		{"renewal off", CreateRequest{CommonName: "a", RenewalEnabled: &no, GenerateKey: true}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Create(ctx, tenantA, tt.req)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("got %v, want accepted", err)
			case tt.want != "" && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("got %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
	if n := countEvents(streamEvents(t, rdb), events.ClientCertIssued); n != 3 {
		t.Errorf("issued events: got %d, want 3 (only accepted requests)", n)
	}
	// Defaults: a 2-day certificate gets no automatic renewal; a 30-day one
	// renews at 10 days.
	short, err := s.Create(ctx, tenantA, CreateRequest{CommonName: "short", DaysValid: 2, GenerateKey: true})
	if err != nil || short.RenewalEnabled {
		t.Errorf("2-day certificate: got renewal %v %v, want disabled", short.RenewalEnabled, err)
	}
	month, err := s.Create(ctx, tenantA, CreateRequest{CommonName: "month", DaysValid: 30, GenerateKey: true})
	if err != nil || !month.RenewalEnabled || month.RenewalThresholdDays != 10 {
		t.Errorf("30-day certificate: got renewal %v at %d days %v, want enabled at 10", month.RenewalEnabled, month.RenewalThresholdDays, err)
	}
}

// TestKeysSealed scans every Redis key: neither the CA key nor a generated
// client key appears in clear (PEM, DER or base64 of the DER), and a
// store with another passphrase cannot open them.
func TestKeysSealed(t *testing.T) {
	ctx := context.Background()
	s, rdb := initStore(t)
	a, _ := s.Authority(ctx)
	c, err := s.Create(ctx, tenantA, CreateRequest{CommonName: "sealed", GenerateKey: true})
	if err != nil {
		t.Fatal(err)
	}
	caDER, _ := x509.MarshalPKCS8PrivateKey(a.Signer)
	clientKeyPEM := download(t, s, tenantA, c.ID, DownloadKey)
	clientKey, err := parseKeyPEM(clientKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	clientDER, _ := x509.MarshalPKCS8PrivateKey(clientKey)
	secrets := map[string][]byte{
		"CA key DER": caDER, "client key DER": clientDER,
		"CA key base64":  []byte(base64.StdEncoding.EncodeToString(caDER)),
		"client key PEM": clientKeyPEM, "client key base64": []byte(base64.StdEncoding.EncodeToString(clientDER)),
		"scalar of the CA key": a.Signer.(*ecdsa.PrivateKey).D.Bytes(),
	}
	var values [][]byte
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	sealedSeen := 0
	for _, k := range keys {
		switch typ := rdb.Type(ctx, k).Val(); typ {
		case "string":
			values = append(values, []byte(rdb.Get(ctx, k).Val()))
		case "hash":
			for f, v := range rdb.HGetAll(ctx, k).Val() {
				values = append(values, []byte(v))
				if strings.HasSuffix(f, "_sealed") && strings.HasPrefix(v, "v1.") {
					sealedSeen++
				}
			}
		case "stream":
			for _, m := range rdb.XRange(ctx, k, "-", "+").Val() {
				for _, v := range m.Values {
					values = append(values, []byte(v.(string)))
				}
			}
		case "zset":
			for _, m := range rdb.ZRange(ctx, k, 0, -1).Val() {
				values = append(values, []byte(m))
			}
		default:
			t.Errorf("key %s of type %s not scanned", k, typ)
		}
	}
	for name, secret := range secrets {
		for _, v := range values {
			if bytes.Contains(v, secret) {
				t.Errorf("%s found in clear in Redis", name)
			}
		}
	}
	for _, v := range values {
		if bytes.Contains(v, []byte("PRIVATE KEY")) {
			t.Errorf("a PEM private key is stored in clear: %.60q", v)
		}
	}
	if sealedSeen != 2 {
		t.Errorf("sealed values: got %d, want 2 (CA key, client key)", sealedSeen)
	}

	other := newStore(t, rdb, "another passphrase entirely", nil)
	if _, err := other.Authority(ctx); !errors.Is(err, seal.ErrOpen) {
		t.Errorf("authority with another passphrase: got %v, want seal.ErrOpen", err)
	}
	if _, err := other.Download(ctx, tenantA, c.ID, DownloadKey); !errors.Is(err, seal.ErrOpen) {
		t.Errorf("key with another passphrase: got %v, want seal.ErrOpen", err)
	}
	none := newStore(t, rdb, "", nil)
	if _, err := none.Create(ctx, tenantA, CreateRequest{CommonName: "x", GenerateKey: true}); !errors.Is(err, ErrNoPassphrase) {
		t.Errorf("create without passphrase: got %v, want ErrNoPassphrase", err)
	}
	if _, err := none.Get(ctx, tenantA, c.ID); err != nil {
		t.Errorf("get without passphrase: %v", err)
	}
	if _, err := none.Info(ctx); err != nil {
		t.Errorf("info without passphrase: %v", err)
	}
}

func TestReplicasSign(t *testing.T) {
	ctx := context.Background()
	s1, rdb := initStore(t)
	s2 := newStore(t, rdb, testPass, nil)
	a1, _ := s1.Authority(ctx)
	var wg sync.WaitGroup
	ids := make([]string, 20)
	errs := make([]error, 20)
	for i := range ids {
		s := []*Store{s1, s2}[i%2]
		wg.Go(func() {
			c, err := s.Create(ctx, tenantA, CreateRequest{CommonName: "replica", GenerateKey: true})
			ids[i], errs[i] = c.ID, err
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, id := range ids {
		if errs[i] != nil {
			t.Fatalf("create %d: %v", i, errs[i])
		}
		seen[id] = true
		// Each replica reads what the other signed, key included.
		reader := []*Store{s2, s1}[i%2]
		if err := verifyClient(t, a1.PEM, download(t, reader, tenantA, id, DownloadCert), time.Now()); err != nil {
			t.Errorf("certificate %d: %v", i, err)
		}
		download(t, reader, tenantA, id, DownloadKey)
	}
	list, err := s2.List(ctx, tenantA, Filter{})
	if err != nil || len(list) != 20 || len(seen) != 20 {
		t.Errorf("list: got %d certificates (%d distinct ids) %v, want 20", len(list), len(seen), err)
	}
}

// selfSignedCA makes a CA outside certfleet, as an operator would bring.
func selfSignedCA(t *testing.T, isCA bool) ([]byte, []byte) {
	t.Helper()
	return selfSignedCAWith(t, isCA, x509.KeyUsageCertSign|x509.KeyUsageCRLSign)
}

func selfSignedCAWith(t *testing.T, isCA bool, usage x509.KeyUsage) ([]byte, []byte) {
	t.Helper()
	// P-384: an operator's CA need not use the key type certfleet generates.
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	cert := testenv.Sign(t, &x509.Certificate{
		Subject:  pkix.Name{CommonName: "Operator Root", Organization: []string{"ACME"}},
		KeyUsage: usage, BasicConstraintsValid: true, IsCA: isCA,
	}, key.Public(), nil, key, testenv.Validity(time.Now().Add(-time.Hour), time.Now().Add(5*365*24*time.Hour)))
	kder, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func TestImport(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	s := newStore(t, rdb, testPass, nil)
	certPEM, keyPEM := selfSignedCA(t, true)
	notCA, notCAKey := selfSignedCA(t, false)
	_, otherKey := selfSignedCA(t, true)
	noCRLSign, noCRLSignKey := selfSignedCAWith(t, true, x509.KeyUsageCertSign)
	noUsage, noUsageKey := selfSignedCAWith(t, true, 0)
	tests := []struct {
		name      string
		cert, key []byte
		want      string
	}{
		{"not a CA", notCA, notCAKey, "not a CA"},
		{"no cRLSign", noCRLSign, noCRLSignKey, "cRLSign"},
		{"no key usage", noUsage, noUsageKey, "keyCertSign"},
		{"key mismatch", certPEM, otherKey, "does not match"},
		{"no key", certPEM, []byte("nothing"), "CA key"},
		{"encrypted key", certPEM, pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), "encrypted"},
	}
	for _, tt := range tests {
		if _, err := s.Import(ctx, tt.cert, tt.key); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want ErrInvalid mentioning %q", tt.name, err, tt.want)
		}
	}
	if _, err := s.Import(ctx, certPEM, keyPEM); err != nil {
		t.Fatalf("import: %v", err)
	}
	// Another replica signs with the imported CA.
	s2 := newStore(t, rdb, testPass, nil)
	info, err := s2.Info(ctx)
	if err != nil || info.Source != "imported" || info.KeyType != "ecdsa-p384" || info.Cert.Subject.CommonName != "Operator Root" {
		t.Errorf("info: got %+v %v, want the imported ecdsa-p384 CA", info, err)
	}
	c, err := s2.Create(ctx, tenantA, CreateRequest{CommonName: "imported", GenerateKey: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyClient(t, certPEM, download(t, s2, tenantA, c.ID, DownloadCert), time.Now()); err != nil {
		t.Errorf("verify against the imported CA: %v", err)
	}
	if _, err := s2.Import(ctx, certPEM, keyPEM); !errors.Is(err, ErrCAExists) {
		t.Errorf("second import: got %v, want ErrCAExists", err)
	}
	if _, err := s2.Init(ctx, ""); !errors.Is(err, ErrCAExists) {
		t.Errorf("init after import: got %v, want ErrCAExists", err)
	}
}

func TestRenew(t *testing.T) {
	ctx := context.Background()
	s, rdb := initStore(t)
	a, _ := s.Authority(ctx)
	old, err := s.Create(ctx, tenantA, CreateRequest{CommonName: "carol", Email: "carol@example.com",
		Organization: "ACME", Usage: "vpn", DaysValid: 60, GenerateKey: true, Notes: "n"})
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := s.Renew(ctx, tenantA, old.ID)
	if err != nil {
		t.Fatalf("renew: %v", err)
	}
	oldCert := parsePEMCert(t, download(t, s, tenantA, old.ID, DownloadCert))
	newCert := parsePEMCert(t, download(t, s, tenantA, renewed.ID, DownloadCert))
	if newCert.Subject.String() != oldCert.Subject.String() || newCert.SerialNumber.Cmp(oldCert.SerialNumber) == 0 ||
		publicKeysEqual(newCert.PublicKey, oldCert.PublicKey) {
		t.Errorf("renewed: subject %q (was %q), serial %s (was %s), same key %v: want same subject, new serial and key",
			newCert.Subject, oldCert.Subject, newCert.SerialNumber, oldCert.SerialNumber, publicKeysEqual(newCert.PublicKey, oldCert.PublicKey))
	}
	if err := verifyClient(t, a.PEM, download(t, s, tenantA, renewed.ID, DownloadCert), time.Now()); err != nil {
		t.Errorf("verify renewed: %v", err)
	}
	if renewed.RenewedFrom != old.ID || renewed.Usage != "vpn" || renewed.Notes != "n" || renewed.DaysValid != 60 || !renewed.KeyGenerated {
		t.Errorf("renewed record: got %+v", renewed)
	}
	if got, _ := s.Get(ctx, tenantA, old.ID); got.RenewedBy != renewed.ID || got.Revoked {
		t.Errorf("old record: renewed_by %q revoked %v, want %s and still valid", got.RenewedBy, got.Revoked, renewed.ID)
	}
	if _, err := s.Renew(ctx, tenantA, old.ID); !errors.Is(err, ErrAlreadyRenewed) {
		t.Errorf("second renewal of the old one: got %v, want ErrAlreadyRenewed", err)
	}
	evs := streamEvents(t, rdb)
	if countEvents(evs, events.ClientCertRenewed) != 1 || countEvents(evs, events.ClientCertIssued) != 2 {
		t.Errorf("events: got %d renewed, %d issued, want 1 and 2",
			countEvents(evs, events.ClientCertRenewed), countEvents(evs, events.ClientCertIssued))
	}

	// Concurrent renewals of one certificate (two replicas, users clicking
	// twice): one wins, the others are told it was renewed.
	s2 := newStore(t, rdb, testPass, nil)
	racy, err := s.Create(ctx, tenantA, CreateRequest{CommonName: "racy", GenerateKey: true})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var wins atomic.Int32
	for i := range 8 {
		st := []*Store{s, s2}[i%2]
		wg.Go(func() {
			_, err := st.Renew(ctx, tenantA, racy.ID)
			switch {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, ErrAlreadyRenewed):
				t.Errorf("concurrent renew: %v", err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Errorf("concurrent renewals that succeeded: got %d, want 1", wins.Load())
	}

	// A CSR certificate renews for the same key: its holder keeps it.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csrCert, err := s.Create(ctx, tenantA, CreateRequest{CommonName: "csr", CSR: makeCSR(t, key)})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := s.Renew(ctx, tenantA, csrCert.ID)
	if err != nil {
		t.Fatalf("renew csr certificate: %v", err)
	}
	if c := parsePEMCert(t, download(t, s, tenantA, r2.ID, DownloadCert)); !publicKeysEqual(c.PublicKey, key.Public()) || r2.KeyGenerated {
		t.Errorf("renewed CSR certificate: want the CSR's key again, not a generated one")
	}

	if _, err := s.Revoke(ctx, tenantA, renewed.ID, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Renew(ctx, tenantA, renewed.ID); !errors.Is(err, ErrRevoked) {
		t.Errorf("renew revoked: got %v, want ErrRevoked", err)
	}
	if _, err := s.Renew(ctx, tenantB, r2.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("renew another tenant's: got %v, want ErrNotFound", err)
	}
}

func TestRevoke(t *testing.T) {
	ctx := context.Background()
	s, rdb := initStore(t)
	c, err := s.Create(ctx, tenantA, CreateRequest{CommonName: "dave", GenerateKey: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke(ctx, tenantA, c.ID, "lost it"); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad reason: got %v, want ErrInvalid", err)
	}
	if _, err := s.Revoke(ctx, tenantB, c.ID, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("another tenant's: got %v, want ErrNotFound", err)
	}
	r, err := s.Revoke(ctx, tenantA, c.ID, "compromised")
	if err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if !r.Revoked || r.Reason != "keyCompromise" || r.RevokedAt == nil {
		t.Errorf("revoked record: got %+v, want revoked for keyCompromise", r)
	}
	// OCSP's lookup sees it at once, from another replica too.
	s2 := newStore(t, rdb, "", nil)
	if got, err := s2.BySerial(ctx, c.Serial); err != nil || !got.Revoked || got.Reason != "keyCompromise" {
		t.Errorf("by serial after revoke: got %+v %v", got, err)
	}
	if _, err := s.Revoke(ctx, tenantA, c.ID, ""); !errors.Is(err, ErrAlreadyRevoked) {
		t.Errorf("revoke twice: got %v, want ErrAlreadyRevoked", err)
	}
	c2, _ := s.Create(ctx, tenantB, CreateRequest{CommonName: "erin", GenerateKey: true})
	if _, err := s.Revoke(ctx, tenantB, c2.ID, "cessation_of_operation"); err != nil {
		t.Fatal(err)
	}
	revs, err := s2.Revocations(ctx)
	if err != nil || len(revs) != 2 {
		t.Fatalf("revocations: got %v %v, want 2", revs, err)
	}
	want := map[string]int{c.Serial.String(): 1, c2.Serial.String(): 5}
	for _, rv := range revs {
		if code, ok := want[rv.Serial.String()]; !ok || rv.ReasonCode != code || rv.RevokedAt.IsZero() {
			t.Errorf("revocation %+v: want code %d", rv, code)
		}
	}
	if v, err := s2.RevocationVersion(ctx); err != nil || v != 2 {
		t.Errorf("revocation version: got %d %v, want 2", v, err)
	}
	if n := countEvents(streamEvents(t, rdb), events.ClientCertRevoked); n != 2 {
		t.Errorf("revoked events: got %d, want 2", n)
	}
}

func TestNormalizeReason(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"", "unspecified", true},
		{"compromised", "keyCompromise", true},
		{"KeyCompromise", "keyCompromise", true},
		{"cacompromise", "cACompromise", true},
		{"superseded", "superseded", true},
		{"privilege_withdrawn", "privilegeWithdrawn", true},
		{"removeFromCRL", "", false},
		{"whatever", "", false},
	}
	for _, tt := range tests {
		got, ok := NormalizeReason(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("NormalizeReason(%q): got %q %v, want %q %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
	if ReasonCode("aACompromise") != 10 || ReasonCode("certificateHold") != 6 {
		t.Errorf("reason codes: got %d and %d, want 10 and 6", ReasonCode("aACompromise"), ReasonCode("certificateHold"))
	}
}

func TestTenancyAndList(t *testing.T) {
	ctx := context.Background()
	s, _ := initStore(t)
	mk := func(tenant, cn, usage string) Cert {
		t.Helper()
		c, err := s.Create(ctx, tenant, CreateRequest{CommonName: cn, Usage: usage, GenerateKey: true})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a1 := mk(tenantA, "Alice Laptop", "api-mtls")
	a2 := mk(tenantA, "bob-vpn", "vpn")
	a3 := mk(tenantA, "alice-phone", "vpn")
	b1 := mk(tenantB, "alice-other-tenant", "vpn")
	if _, err := s.Revoke(ctx, tenantA, a2.ID, ""); err != nil {
		t.Fatal(err)
	}
	yes, no := true, false
	tests := []struct {
		name string
		f    Filter
		want []string
	}{
		{"all, newest first", Filter{}, []string{a3.ID, a2.ID, a1.ID}},
		{"usage", Filter{Usage: "vpn"}, []string{a3.ID, a2.ID}},
		{"revoked", Filter{Revoked: &yes}, []string{a2.ID}},
		{"not revoked", Filter{Revoked: &no}, []string{a3.ID, a1.ID}},
		{"search", Filter{Search: "ALICE"}, []string{a3.ID, a1.ID}},
		{"search and usage", Filter{Search: "alice", Usage: "vpn"}, []string{a3.ID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.List(ctx, tenantA, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, c := range got {
				ids = append(ids, c.ID)
			}
			if strings.Join(ids, ",") != strings.Join(tt.want, ",") {
				t.Errorf("got %v, want %v", ids, tt.want)
			}
		})
	}
	if _, err := s.Get(ctx, tenantB, a1.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("get another tenant's: got %v, want ErrNotFound", err)
	}
	for _, kind := range []string{DownloadCert, DownloadKey, DownloadCSR} {
		if _, err := s.Download(ctx, tenantA, b1.ID, kind); !errors.Is(err, ErrNotFound) {
			t.Errorf("download %s of another tenant's: got %v, want ErrNotFound", kind, err)
		}
	}
	if _, err := s.Get(ctx, tenantA, "../../etc"); !errors.Is(err, ErrNotFound) {
		t.Errorf("malformed id: got %v, want ErrNotFound", err)
	}
	if got, _ := s.List(ctx, tenantB, Filter{}); len(got) != 1 || got[0].ID != b1.ID {
		t.Errorf("tenant B's list: got %v, want only %s", got, b1.ID)
	}
}

func TestAutoRenew(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	rdb := testenv.Redis(t).Client(t)
	s1 := newStore(t, rdb, testPass, clk.Now)
	s2 := newStore(t, rdb, testPass, clk.Now)
	if _, err := s1.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	no := false
	c, err := s1.Create(ctx, tenantA, CreateRequest{CommonName: "auto", DaysValid: 30, RenewalThresholdDays: 10, GenerateKey: true})
	if err != nil {
		t.Fatal(err)
	}
	off, err := s1.Create(ctx, tenantA, CreateRequest{CommonName: "manual", DaysValid: 30, RenewalEnabled: &no, GenerateKey: true})
	if err != nil {
		t.Fatal(err)
	}
	if due, err := s1.DueForRenewal(ctx, clk.Now(), 100); err != nil || len(due) != 0 {
		t.Errorf("due at once: got %v %v, want none", due, err)
	}
	if _, err := s1.AutoRenew(ctx, tenantA, c.ID); !errors.Is(err, ErrNotDue) {
		t.Errorf("auto-renew before due: got %v, want ErrNotDue", err)
	}
	clk.Advance(21 * 24 * time.Hour)
	due, err := s1.DueForRenewal(ctx, clk.Now(), 100)
	if err != nil || len(due) != 1 || due[0].ID != c.ID || due[0].TenantID != tenantA {
		t.Fatalf("due after 21 days: got %v %v, want only %s", due, err, c.ID)
	}
	// Two replicas' loops race on the same certificate: one renews.
	var wg sync.WaitGroup
	var ok atomic.Int32
	for _, s := range []*Store{s1, s2, s1, s2} {
		wg.Go(func() {
			_, err := s.AutoRenew(ctx, tenantA, c.ID)
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrAlreadyRenewed), errors.Is(err, ErrNotDue):
			default:
				t.Errorf("auto-renew: %v", err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Errorf("successful auto-renewals: got %d, want 1", ok.Load())
	}
	if due, _ := s1.DueForRenewal(ctx, clk.Now(), 100); len(due) != 0 {
		t.Errorf("due after renewal: got %v, want none (the new one is due in 20 days)", due)
	}
	if _, err := s1.AutoRenew(ctx, tenantA, off.ID); !errors.Is(err, ErrNotDue) {
		t.Errorf("auto-renew with renewal off: got %v, want ErrNotDue", err)
	}
	var renewedEv events.ClientCertRenewedV1
	for _, e := range streamEvents(t, rdb) {
		if e.Name == events.ClientCertRenewed {
			_ = e.Decode(&renewedEv)
		}
	}
	if !renewedEv.Automatic || renewedEv.CertID != c.ID {
		t.Errorf("renewed event: got %+v, want automatic renewal of %s", renewedEv, c.ID)
	}
}

func TestCertOutlivingCAIsCut(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	s, err := New(Config{Passphrase: testPass, PublicURL: publicURL, CAValidity: 100 * 24 * time.Hour}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.Init(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.Create(ctx, tenantA, CreateRequest{CommonName: "long", DaysValid: 365, GenerateKey: true})
	if err != nil {
		t.Fatal(err)
	}
	if !c.ExpiresAt.Equal(a.Cert.NotAfter) {
		t.Errorf("expiry: got %s, want the CA's %s", c.ExpiresAt, a.Cert.NotAfter)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"ok", Config{PublicURL: "http://x"}, ""},
		{"short passphrase", Config{PublicURL: "http://x", Passphrase: "short"}, "at least 12"},
		{"no public url", Config{}, "public URL"},
		{"ftp url", Config{PublicURL: "ftp://x"}, "public URL"},
	}
	for _, tt := range tests {
		tt.cfg.setDefaults()
		err := tt.cfg.Validate()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: got %v, want %q", tt.name, err, tt.want)
		}
	}
}

// Certificates created in one millisecond list in the order they were
// issued, newest first (TestTenancyAndList once saw two of them swapped
// under load).
func TestListOrderWithinOneMillisecond(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	at := time.Now().UTC().Truncate(time.Millisecond)
	s := newStore(t, rdb, testPass, func() time.Time { return at })
	if _, err := s.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 6 {
		c, err := s.Create(ctx, tenantA, CreateRequest{CommonName: "c" + strconv.Itoa(i), GenerateKey: true})
		if err != nil {
			t.Fatal(err)
		}
		want = append([]string{c.ID}, want...)
	}
	got, err := s.List(ctx, tenantA, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range got {
		ids = append(ids, c.ID)
	}
	if strings.Join(ids, ",") != strings.Join(want, ",") {
		t.Errorf("got %v, want %v (newest issued first)", ids, want)
	}
}
