package clientca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
)

// CA key types Init accepts.
const (
	KeyECDSAP256 = "ecdsa-p256"
	KeyRSA2048   = "rsa-2048" // client keys only
	KeyRSA3072   = "rsa-3072"
)

// caKeyAAD binds the sealed CA key to its place.
var caKeyAAD = []byte(authorityKey + ":key")

// Authority is the issuing CA: its certificate and a signer for its key.
type Authority struct {
	Cert   *x509.Certificate
	Signer crypto.Signer
	// PEM is the CA certificate in PEM.
	PEM []byte
}

// CAInfo describes the CA without its key: what `certfleet ca show` and
// GET /api/ca/certificate need, readable without the passphrase.
type CAInfo struct {
	Cert      *x509.Certificate
	PEM       []byte
	KeyType   string
	Source    string // "generated" or "imported"
	CreatedAt time.Time
	SHA256    string // hex of the DER
}

// Info returns the CA certificate and facts about it; it needs no
// passphrase. ErrNoCA when there is none.
func (s *Store) Info(ctx context.Context) (CAInfo, error) {
	rec, err := s.rdb.HGetAll(ctx, authorityKey).Result()
	if err != nil {
		return CAInfo{}, fmt.Errorf("read CA: %w", err)
	}
	if rec["cert_pem"] == "" {
		return CAInfo{}, ErrNoCA
	}
	cert, err := parseCertPEM([]byte(rec["cert_pem"]))
	if err != nil {
		return CAInfo{}, fmt.Errorf("read CA: %w", err)
	}
	sum := sha256.Sum256(cert.Raw)
	return CAInfo{Cert: cert, PEM: []byte(rec["cert_pem"]), KeyType: rec["key_type"], Source: rec["source"],
		CreatedAt: msTime(rec["created_at"]), SHA256: hex.EncodeToString(sum[:])}, nil
}

// Authority returns the CA with its signer: ErrNoCA when none was created
// or imported, ErrNoPassphrase when this process cannot open its key. The
// result is cached: a CA never changes once created.
func (s *Store) Authority(ctx context.Context) (*Authority, error) {
	s.mu.Lock()
	a := s.auth
	s.mu.Unlock()
	if a != nil {
		return a, nil
	}
	box, err := s.sealBox(ctx)
	if err != nil {
		return nil, err
	}
	rec, err := s.rdb.HGetAll(ctx, authorityKey).Result()
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	if rec["cert_pem"] == "" {
		return nil, ErrNoCA
	}
	cert, err := parseCertPEM([]byte(rec["cert_pem"]))
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	der, err := box.Open(rec["key_sealed"], caKeyAAD)
	if err != nil {
		return nil, fmt.Errorf("open CA key (is the passphrase the one it was sealed with?): %w", err)
	}
	signer, err := parsePKCS8Signer(der)
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	a = &Authority{Cert: cert, Signer: signer, PEM: []byte(rec["cert_pem"])}
	s.mu.Lock()
	s.auth = a
	s.mu.Unlock()
	return a, nil
}

// createCAScript stores the CA unless one exists: the compare-and-set that
// makes replicas starting together end up with one CA.
//
// KEYS: ca:authority, events stream. ARGV: maxlen, field count, fields,
// then the event's fields. Returns 1 when created, 0 when a CA exists.
var createCAScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local nf = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 3, 2 + nf))
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 3 + nf))
return 1
`)

// Init generates the deployment's CA: keyType "ecdsa-p256" (default, also
// for "") or "rsa-3072", a self-signed certificate valid CAValidity, named
// CommonName. When a CA exists (another replica was first) it returns
// ErrCAExists and changes nothing.
func (s *Store) Init(ctx context.Context, keyType string) (*Authority, error) {
	if keyType == "" {
		keyType = KeyECDSAP256
	}
	if keyType != KeyECDSAP256 && keyType != KeyRSA3072 {
		return nil, invalid("CA key type must be %s or %s, got %q", KeyECDSAP256, KeyRSA3072, keyType)
	}
	// Cheap check first, so a restart does not generate a key for nothing;
	// the script decides.
	if n, err := s.rdb.Exists(ctx, authorityKey).Result(); err != nil {
		return nil, fmt.Errorf("init CA: %w", err)
	} else if n == 1 {
		return nil, ErrCAExists
	}
	key, err := generateKey(keyType)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now().UTC()
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: s.cfg.CommonName, Organization: []string{"certfleet"}},
		NotBefore:             now.Add(-5 * time.Minute).Truncate(time.Second),
		NotAfter:              now.Add(s.cfg.CAValidity).Truncate(time.Second),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		SubjectKeyId:          subjectKeyID(key.Public()),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	return s.storeCA(ctx, cert, key, keyType, "generated")
}

// Import makes an existing CA the deployment's: certPEM holds its
// certificate (a CA allowed to sign certificates, valid now), keyPEM its
// private key (PKCS #8, SEC 1 or PKCS #1, unencrypted) matching it.
// ErrCAExists when the deployment has a CA already.
func (s *Store) Import(ctx context.Context, certPEM, keyPEM []byte) (*Authority, error) {
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, invalid("CA certificate: %v", err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, invalid("CA key: %v", err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, invalid("the key does not match the certificate")
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, invalid("the certificate is not a CA (basic constraints CA:TRUE missing)")
	}
	// The CA signs certificates and CRLs; crypto/x509 signs a CRL only
	// with an issuer that has the cRLSign bit and a subject key identifier.
	if cert.KeyUsage&x509.KeyUsageCertSign == 0 || cert.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return nil, invalid("the certificate's key usage must allow signing certificates and CRLs (keyCertSign and cRLSign)")
	}
	if len(cert.SubjectKeyId) == 0 {
		return nil, invalid("the certificate has no subject key identifier, which CRLs must name")
	}
	now := s.cfg.Now()
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return nil, invalid("the certificate is not valid now (valid %s to %s)",
			cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return s.storeCA(ctx, cert, key, keyTypeOf(key.Public()), "imported")
}

func (s *Store) storeCA(ctx context.Context, cert *x509.Certificate, key crypto.Signer, keyType, source string) (*Authority, error) {
	box, err := s.sealBox(ctx)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal CA key: %w", err)
	}
	sealed, err := box.Seal(keyDER, caKeyAAD)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	sum := sha256.Sum256(cert.Raw)
	fp := hex.EncodeToString(sum[:])
	ev, err := eventFields(events.CACreated, "", fp, now, events.CACreatedV1{
		Subject: cert.Subject.String(), KeyType: keyType, Serial: cert.SerialNumber.String(), SHA256: fp,
		NotBefore: cert.NotBefore.UTC(), NotAfter: cert.NotAfter.UTC(), Source: source,
	})
	if err != nil {
		return nil, err
	}
	rec := []any{"cert_pem", string(certPEM), "key_sealed", sealed, "key_type", keyType, "source", source,
		"created_at", now.UnixMilli()}
	args := append([]any{s.cfg.MaxLen, len(rec)}, rec...)
	args = append(args, ev...)
	n, err := s.commands.RunScript(ctx, createCAScript, []string{authorityKey, events.CAStream}, args...).Int()
	if err != nil {
		return nil, fmt.Errorf("store CA: %w", err)
	}
	if n == 0 {
		return nil, ErrCAExists
	}
	s.logger.Info("client CA created", zap.String("subject", cert.Subject.String()), zap.String("key_type", keyType),
		zap.String("source", source), zap.String("sha256", fp))
	a := &Authority{Cert: cert, Signer: key, PEM: certPEM}
	s.mu.Lock()
	s.auth = a
	s.mu.Unlock()
	return a, nil
}

// Ensure returns the CA, creating one of keyType when there is none: what
// an apiserver starting with --ca-init does. Replicas racing here end with
// the same CA (the loser of createCAScript reads the winner's).
func (s *Store) Ensure(ctx context.Context, keyType string) (*Authority, error) {
	a, err := s.Authority(ctx)
	if !errors.Is(err, ErrNoCA) {
		return a, err
	}
	a, err = s.Init(ctx, keyType)
	if errors.Is(err, ErrCAExists) {
		return s.Authority(ctx)
	}
	return a, err
}

func generateKey(keyType string) (crypto.Signer, error) {
	var (
		key crypto.Signer
		err error
	)
	switch keyType {
	case KeyECDSAP256:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyRSA2048:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case KeyRSA3072:
		key, err = rsa.GenerateKey(rand.Reader, 3072)
	default:
		return nil, invalid("unknown key type %q", keyType)
	}
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", keyType, err)
	}
	return key, nil
}

func keyTypeOf(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ecdsa-" + map[string]string{"P-256": "p256", "P-384": "p384", "P-521": "p521"}[k.Curve.Params().Name]
	case *rsa.PublicKey:
		return "rsa-" + strconv.Itoa(k.N.BitLen())
	case ed25519.PublicKey:
		return "ed25519"
	default:
		return "unknown"
	}
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ka, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ka.Equal(b)
}

// subjectKeyID is RFC 5280's method 1: SHA-1 of the subjectPublicKey bits
// (here SHA-256 truncated to 160 bits, which RFC 7093 allows).
func subjectKeyID(pub crypto.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil
	}
	sum := sha256.Sum256(der)
	return sum[:20]
}

func parseCertPEM(data []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no CERTIFICATE PEM block")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

func parseKeyPEM(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no private key PEM block")
		}
		switch block.Type {
		case "PRIVATE KEY":
			return parsePKCS8Signer(block.Bytes)
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			return x509.ParsePKCS1PrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("encrypted private keys are not supported: decrypt it first (openssl pkey -in key.pem -out plain.pem)")
		}
	}
}

func parsePKCS8Signer(der []byte) (crypto.Signer, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, err
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key of type %T cannot sign", k)
	}
	return signer, nil
}
