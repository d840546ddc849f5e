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
	"math/big"
	"net/mail"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/events/stream"
	"github.com/certfleet/certfleet/internal/idempotency"
	"github.com/certfleet/certfleet/internal/printable"
	"github.com/certfleet/certfleet/internal/quota"
)

// Limits of a request.
const (
	// DefaultDaysValid is a certificate's validity when the request gives none.
	DefaultDaysValid = 365
	// MaxDaysValid caps days_valid (ten years); a certificate never
	// outlives the CA either (its expiry is cut to the CA's).
	MaxDaysValid = 3650
	// DefaultRenewalThresholdDays is how many days before expiry
	// auto-renewal renews, by default (cut to a third of the validity for
	// short-lived certificates).
	DefaultRenewalThresholdDays = 30
	// MaxFieldLen caps common_name, organization and the like, in characters
	// (RFC 5280's upper bound for a CN is 64; longer names are refused).
	MaxFieldLen = 64
	// MaxUsageLen and MaxNotesLen cap cert_usage and notes, in characters.
	MaxUsageLen = 64
	MaxNotesLen = 1000
	// MaxCSRBytes caps a CSR in PEM.
	MaxCSRBytes = 16 << 10
)

// Cert is a client certificate's record. The certificate itself, its CSR
// and its key are read with Download.
type Cert struct {
	ID                 string
	TenantID           string
	CommonName         string
	Email              string
	Organization       string
	OrganizationalUnit string
	Usage              string
	Notes              string
	Serial             *big.Int
	CreatedAt          time.Time
	// issuedEntry is the issued event's entry id: it orders certificates
	// created in one millisecond.
	issuedEntry string
	ExpiresAt   time.Time
	Revoked     bool
	RevokedAt   *time.Time
	// Reason is the RFC 5280 reason name of a revocation (see ReasonCode).
	Reason               string
	RenewalEnabled       bool
	RenewalThresholdDays int
	// KeyGenerated: certfleet generated (and keeps, sealed) the private key;
	// otherwise the certificate was issued for a CSR.
	KeyGenerated bool
	// RenewedFrom is the certificate this one renewed; RenewedBy the one
	// that renewed this one.
	RenewedFrom, RenewedBy string
	// DaysValid is the validity asked for (renewals ask the same again).
	DaysValid int
	// KeyType of the certificate's key: "ecdsa-p256", "rsa-2048"...
	KeyType string
	// SHA256 is the hex SHA-256 of the certificate's DER.
	SHA256 string
	// Idem is the fingerprint of the creation's Idempotency-Key request
	// (internal/idempotency); empty when it had none.
	Idem string
	// Replayed: Create found the certificate an earlier attempt of the
	// same Idempotency-Key request issued (not stored).
	Replayed bool
}

// Status is "active", "revoked" or "expired" at now.
func (c Cert) Status(now time.Time) string {
	switch {
	case c.Revoked:
		return "revoked"
	case !now.Before(c.ExpiresAt):
		return "expired"
	default:
		return "active"
	}
}

// CreateRequest asks for a client certificate, with CertMate's fields.
type CreateRequest struct {
	CommonName         string // required
	Email              string // optional; also the SAN email
	Organization       string
	OrganizationalUnit string
	Usage              string // "api-mtls", "vpn" or any string
	// DaysValid defaults to DefaultDaysValid; 1..MaxDaysValid.
	DaysValid int
	// GenerateKey: certfleet generates the key (KeyType); otherwise CSR is
	// required (PEM) and its signature checked. The subject comes from the
	// request, never from the CSR; only its public key is used.
	GenerateKey bool
	CSR         []byte
	// KeyType of a generated key: "ecdsa-p256" (default), "rsa-2048" or
	// "rsa-3072".
	KeyType string
	Notes   string
	// RenewalEnabled defaults to true; RenewalThresholdDays to
	// min(DefaultRenewalThresholdDays, DaysValid/3), and must be below
	// DaysValid when given (1..365). A default threshold of 0 (a
	// certificate valid less than 3 days) leaves renewal disabled.
	RenewalEnabled       *bool
	RenewalThresholdDays int
	// Idempotency makes a Create's retry find the certificate its first
	// attempt issued (the zero value: none): the id is the request's.
	Idempotency idempotency.Request
}

// Filter selects certificates in List.
type Filter struct {
	// Usage: only this cert_usage (exact).
	Usage string
	// Revoked: only revoked (true) or only not revoked (false).
	Revoked *bool
	// Search: only those whose common name contains it (case-insensitive).
	Search string
}

// issued is what signing produced, before it is stored.
type issued struct {
	cert      *x509.Certificate
	certPEM   []byte
	keyPEM    []byte // nil for a CSR
	csrPEM    []byte
	keyType   string
	daysValid int
}

// normalize checks req and fills its defaults.
func (req *CreateRequest) normalize() error {
	req.CommonName = strings.TrimSpace(req.CommonName)
	req.Email = strings.TrimSpace(req.Email)
	var errs []error
	field := func(name, v string, max int) {
		if utf8.RuneCountInString(v) > max {
			errs = append(errs, invalid("%s must be at most %d characters", name, max))
		}
		if printable.HasControl(v) {
			errs = append(errs, invalid("%s must not contain control characters", name))
		}
	}
	if req.CommonName == "" {
		errs = append(errs, invalid("common_name is required"))
	}
	field("common_name", req.CommonName, MaxFieldLen)
	field("organization", req.Organization, MaxFieldLen)
	field("organizational_unit", req.OrganizationalUnit, MaxFieldLen)
	field("cert_usage", req.Usage, MaxUsageLen)
	if utf8.RuneCountInString(req.Notes) > MaxNotesLen {
		errs = append(errs, invalid("notes must be at most %d characters", MaxNotesLen))
	}
	if printable.HasControlInText(req.Notes) {
		errs = append(errs, invalid("notes must not contain control characters"))
	}
	if req.Email != "" {
		a, err := mail.ParseAddress(req.Email)
		if err != nil || a.Address != req.Email || a.Name != "" {
			errs = append(errs, invalid("email %q is not a valid address", req.Email))
		}
	}
	if req.DaysValid == 0 {
		req.DaysValid = DefaultDaysValid
	}
	if req.DaysValid < 1 || req.DaysValid > MaxDaysValid {
		errs = append(errs, invalid("days_valid must be 1 to %d, got %d", MaxDaysValid, req.DaysValid))
	}
	if req.GenerateKey {
		if len(req.CSR) > 0 {
			errs = append(errs, invalid("csr must not be given with generate_key true"))
		}
		if req.KeyType == "" {
			req.KeyType = KeyECDSAP256
		}
		if req.KeyType != KeyECDSAP256 && req.KeyType != KeyRSA2048 && req.KeyType != KeyRSA3072 {
			errs = append(errs, invalid("key_type must be %s, %s or %s, got %q", KeyECDSAP256, KeyRSA2048, KeyRSA3072, req.KeyType))
		}
	} else {
		if len(req.CSR) == 0 {
			errs = append(errs, invalid("csr is required when generate_key is false"))
		}
		if len(req.CSR) > MaxCSRBytes {
			errs = append(errs, invalid("csr must be at most %d bytes", MaxCSRBytes))
		}
	}
	enabled := true
	if req.RenewalEnabled != nil {
		enabled = *req.RenewalEnabled
	}
	switch {
	case req.RenewalThresholdDays != 0:
		if req.RenewalThresholdDays < 1 || req.RenewalThresholdDays > 365 || req.RenewalThresholdDays >= req.DaysValid {
			errs = append(errs, invalid("renewal_threshold_days must be 1 to 365 and below days_valid, got %d", req.RenewalThresholdDays))
		}
	default:
		req.RenewalThresholdDays = min(DefaultRenewalThresholdDays, req.DaysValid/3)
		if req.RenewalThresholdDays == 0 && req.RenewalEnabled == nil {
			enabled = false
		}
	}
	req.RenewalEnabled = &enabled
	return errors.Join(errs...)
}

// Create signs a client certificate for tenantID and stores it, with its
// sealed key when generated, and appends clientcert.issued.
func (s *Store) Create(ctx context.Context, tenantID string, req CreateRequest) (Cert, error) {
	if tenantID == "" {
		return Cert{}, errors.New("create client certificate: empty tenant")
	}
	if err := req.normalize(); err != nil {
		return Cert{}, err
	}
	var pub crypto.PublicKey
	var key crypto.Signer
	var csrPEM []byte
	if req.GenerateKey {
		k, err := generateKey(req.KeyType)
		if err != nil {
			return Cert{}, err
		}
		key, pub = k, k.Public()
	} else {
		csr, err := parseCSR(req.CSR)
		if err != nil {
			return Cert{}, err
		}
		if err := checkCSRNames(csr); err != nil {
			return Cert{}, err
		}
		pub = csr.PublicKey
		csrPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw})
	}
	return s.issueAndStore(ctx, tenantID, req, pub, key, csrPEM, nil)
}

// TenantURIPrefix starts the URI SAN that names the tenant a certificate
// was issued for: every tenant's certificates share the one issuing CA,
// and may carry the same subject (CN, email, organization) as another
// tenant's, so a relying party that serves several tenants tells them
// apart by this URI alone.
const TenantURIPrefix = "urn:certfleet:tenant:"

// TenantURI is the URI SAN of tenantID's certificates.
func TenantURI(tenantID string) string { return TenantURIPrefix + tenantID }

// checkCSRNames refuses a CSR that asks for a URI in the tenant URN
// namespace. Only a CSR's public key is used, so such a URI would never be
// issued; refusing it tells the requester so, rather than leaving them to
// believe they chose the tenant a relying party sees. URN schemes and
// namespace ids ignore case (RFC 8141), so the comparison does too.
func checkCSRNames(csr *x509.CertificateRequest) error {
	for _, u := range csr.URIs {
		if strings.HasPrefix(strings.ToLower(u.String()), TenantURIPrefix) {
			return invalid("csr must not ask for a URI SAN under %s: certfleet names the issuing account there itself", TenantURIPrefix)
		}
	}
	return nil
}

// renewal is the old certificate a Create renews.
type renewal struct {
	old       Cert
	automatic bool
}

func (s *Store) issueAndStore(ctx context.Context, tenantID string, req CreateRequest, pub crypto.PublicKey,
	key crypto.Signer, csrPEM []byte, ren *renewal) (Cert, error) {
	a, err := s.Authority(ctx)
	if err != nil {
		return Cert{}, err
	}
	box, err := s.sealBox(ctx)
	if err != nil {
		return Cert{}, err
	}
	if key != nil && csrPEM == nil {
		// A CSR beside a generated key, so that every certificate has one
		// to download, as CertMate offers.
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subjectOf(req)}, key)
		if err != nil {
			return Cert{}, fmt.Errorf("create CSR: %w", err)
		}
		csrPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}
	// A collision of 80 random bits (id) or 127 (serial) does not happen;
	// the loop only turns the impossible into an error instead of a
	// shared record.
	idem := req.Idempotency
	for range 3 {
		id, err := newCertID()
		if err != nil {
			return Cert{}, err
		}
		if idem.Set() {
			id = idem.ID("cert-", 10)
		}
		iss, err := s.sign(a, tenantID, req, pub)
		if err != nil {
			return Cert{}, err
		}
		iss.csrPEM = csrPEM
		c := Cert{
			ID: id, TenantID: tenantID, CommonName: req.CommonName, Email: req.Email,
			Organization: req.Organization, OrganizationalUnit: req.OrganizationalUnit, Usage: req.Usage,
			Notes: req.Notes, Serial: iss.cert.SerialNumber, CreatedAt: s.cfg.Now().UTC().Truncate(time.Millisecond),
			ExpiresAt: iss.cert.NotAfter.UTC(), RenewalEnabled: *req.RenewalEnabled,
			RenewalThresholdDays: req.RenewalThresholdDays, KeyGenerated: key != nil,
			DaysValid: req.DaysValid, KeyType: keyTypeOf(pub), SHA256: sha256Hex(iss.cert.Raw),
			Idem: idem.Fingerprint(),
		}
		var sealedKey string
		if key != nil {
			der, err := x509.MarshalPKCS8PrivateKey(key)
			if err != nil {
				return Cert{}, fmt.Errorf("marshal client key: %w", err)
			}
			iss.keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
			if sealedKey, err = box.Seal(iss.keyPEM, keyAAD(id)); err != nil {
				return Cert{}, err
			}
		}
		if ren != nil {
			c.RenewedFrom = ren.old.ID
		}
		res, err := s.store(ctx, c, iss, sealedKey, ren)
		if err != nil {
			return Cert{}, err
		}
		if ex := quota.ScriptExceeded(res, quota.ClientCerts); ex != nil {
			return Cert{}, ex
		}
		switch res {
		case "created":
			s.logger.Info("client certificate issued", zap.String("tenant_id", tenantID), zap.String("cert_id", id),
				zap.String("serial", c.Serial.String()), zap.String("renewed_from", c.RenewedFrom))
			return c, nil
		case "taken":
			if !idem.Set() {
				continue
			}
			// The id is the request's: an earlier attempt issued it.
			cur, err := s.Get(ctx, tenantID, id)
			if err != nil {
				return Cert{}, err
			}
			if err := idem.Check(cur.Idem); err != nil {
				return Cert{}, err
			}
			cur.Replayed = true
			return cur, nil
		case "not-found":
			return Cert{}, ErrNotFound
		case "revoked":
			return Cert{}, ErrRevoked
		case "renewed":
			return Cert{}, ErrAlreadyRenewed
		case "not-due":
			return Cert{}, ErrNotDue
		default:
			return Cert{}, fmt.Errorf("store client certificate: unexpected script result %q", res)
		}
	}
	return Cert{}, errors.New("issue client certificate: three id or serial collisions in a row")
}

func subjectOf(req CreateRequest) pkix.Name {
	n := pkix.Name{CommonName: req.CommonName}
	if req.Organization != "" {
		n.Organization = []string{req.Organization}
	}
	if req.OrganizationalUnit != "" {
		n.OrganizationalUnit = []string{req.OrganizationalUnit}
	}
	return n
}

// sign makes tenantID's certificate: a random 127-bit serial, the
// request's subject, clientAuth, SAN email and the tenant's URI
// (TenantURI), SKI (AKI from the CA), CRL distribution point and OCSP
// responder under PublicURL. Its expiry never passes the CA's.
func (s *Store) sign(a *Authority, tenantID string, req CreateRequest, pub crypto.PublicKey) (issued, error) {
	serial, err := newSerial()
	if err != nil {
		return issued{}, err
	}
	tenantURI, err := url.Parse(TenantURI(tenantID))
	if err != nil {
		return issued{}, fmt.Errorf("sign client certificate: tenant URI: %w", err)
	}
	now := s.cfg.Now().UTC()
	notAfter := now.Add(time.Duration(req.DaysValid) * 24 * time.Hour).Truncate(time.Second)
	if notAfter.After(a.Cert.NotAfter) {
		notAfter = a.Cert.NotAfter
	}
	ku := x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		ku |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subjectOf(req),
		NotBefore:             now.Add(-5 * time.Minute).Truncate(time.Second),
		NotAfter:              notAfter,
		KeyUsage:              ku,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		SubjectKeyId:          subjectKeyID(pub),
		AuthorityKeyId:        a.Cert.SubjectKeyId,
		CRLDistributionPoints: []string{s.cfg.PublicURL + "/api/crl/download/der"},
		OCSPServer:            []string{s.cfg.PublicURL + "/ocsp"},
		URIs:                  []*url.URL{tenantURI},
	}
	if req.Email != "" {
		tmpl.EmailAddresses = []string{req.Email}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.Cert, pub, a.Signer)
	if err != nil {
		return issued{}, fmt.Errorf("sign client certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return issued{}, fmt.Errorf("sign client certificate: %w", err)
	}
	return issued{cert: cert, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// parseCSR reads a PEM CSR, checks its signature and refuses weak keys.
func parseCSR(data []byte) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, invalid("csr must be a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, invalid("csr does not parse: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, invalid("csr signature does not verify: %v", err)
	}
	switch k := csr.PublicKey.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, invalid("csr RSA key must be at least 2048 bits, got %d", k.N.BitLen())
		}
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() && k.Curve != elliptic.P521() {
			return nil, invalid("csr ECDSA curve must be P-256, P-384 or P-521")
		}
	case ed25519.PublicKey:
	default:
		return nil, invalid("csr key type %T is not supported", csr.PublicKey)
	}
	return csr, nil
}

// newSerial returns a random positive serial of at most 127 bits (RFC 5280:
// positive, at most 20 octets; CA/B forum: at least 64 random bits).
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 127)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("new serial: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// newCertID returns "cert-" and 20 hex digits (80 random bits).
func newCertID() (string, error) {
	b := make([]byte, 10)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("new certificate id: %w", err)
	}
	return "cert-" + hex.EncodeToString(b), nil
}

// ValidID tells whether id has the form of a certificate id, so that a
// caller answers 404 without a lookup for anything else.
func ValidID(id string) bool {
	rest, ok := strings.CutPrefix(id, "cert-")
	if !ok || len(rest) != 20 {
		return false
	}
	_, err := hex.DecodeString(rest)
	return err == nil && strings.ToLower(rest) == rest
}

func keyAAD(id string) []byte { return []byte(certKey(id) + ":key") }

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// activeCountLua is active_count(certs, active, counted, now): how many
// of a tenant's certificates are active (neither revoked nor expired) at
// now ms, from its active set (KEYS: the tenant's certificate list, its
// active set and the mark that the set is complete). A tenant whose
// certificates were issued before the set existed has its set built
// (again, when the mark was deleted) from its records once, on first use;
// every later issue adds to it and every revocation takes from it, so the
// count costs the expired entries it drops and a ZCARD.
var activeCountLua = `
local function active_count(certs, active, counted, now)
  if redis.call('EXISTS', counted) == 0 then
    redis.call('DEL', active)
    for _, id in ipairs(redis.call('ZRANGE', certs, 0, -1)) do
      local r = redis.call('HMGET', '` + certKey("") + `' .. id, 'expires_at', 'revoked_at')
      if r[1] and not r[2] then redis.call('ZADD', active, r[1], id) end
    end
    redis.call('SET', counted, '1')
  end
  redis.call('ZREMRANGEBYSCORE', active, '-inf', now)
  return redis.call('ZCARD', active)
end
`

// storeCertScript stores a new certificate record, and for a renewal marks
// the old one renewed in the same step. It refuses a certificate that
// would pass the tenant's quota of active certificates, counted in the
// same step.
//
// KEYS: clientcert:<id>, tenant:<tenant>:clientcerts, ca:serials,
// clientcerts:renewal, events stream, the tenant's active set, its
// counted mark, clientcert:<old id> (renewal only).
// ARGV: id, tenant, serial, created ms, renewal due ms ("" = none), maxlen,
// old id ("" = not a renewal), auto ("1": only when due), now ms, quota of
// active certificates (0: none checked), expires ms, field count, fields,
// issued event field count, its fields, then the renewed event's fields
// (renewal only). The issued event's entry id is kept as issued_entry: it
// orders certificates created in one millisecond. Returns "created",
// "taken" (id or serial exists), "quota:<limit>", or for a renewal
// "not-found", "revoked", "renewed", "not-due".
var storeCertScript = redis.NewScript(activeCountLua + `
if redis.call('EXISTS', KEYS[1]) == 1 then
  -- Written again as it is, so that a replay's WAIT (an Idempotency-Key's
  -- retry finds the id taken) covers the first attempt's write.
  redis.call('HSET', KEYS[1], 'tenant_id', redis.call('HGET', KEYS[1], 'tenant_id'))
  return 'taken'
end
if redis.call('HEXISTS', KEYS[3], ARGV[3]) == 1 then return 'taken' end
if ARGV[7] ~= '' then
  local old = redis.call('HMGET', KEYS[8], 'tenant_id', 'revoked_at', 'renewed_by')
  if old[1] ~= ARGV[2] then return 'not-found' end
  if old[2] then return 'revoked' end
  if old[3] then return 'renewed' end
  if ARGV[8] == '1' then
    local due = redis.call('ZSCORE', KEYS[4], ARGV[7])
    if not due or tonumber(due) > tonumber(ARGV[9]) then return 'not-due' end
  end
end
local limit = tonumber(ARGV[10])
if limit > 0 and active_count(KEYS[2], KEYS[6], KEYS[7], ARGV[9]) >= limit then return 'quota:' .. limit end
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[8], 'renewed_by', ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[7])
end
local nf = tonumber(ARGV[12])
redis.call('HSET', KEYS[1], unpack(ARGV, 13, 12 + nf))
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[6], ARGV[11], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[1])
if ARGV[5] ~= '' then redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1]) end
local ne = tonumber(ARGV[13 + nf])
local sid = redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[6], '*', unpack(ARGV, 14 + nf, 13 + nf + ne))
redis.call('HSET', KEYS[1], 'issued_entry', sid)
if ARGV[7] ~= '' then
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[6], '*', unpack(ARGV, 14 + nf + ne))
end
return 'created'
`)

// activeCountScript is active_count for a tenant. KEYS: its certificate
// list, active set and counted mark. ARGV: now ms.
var activeCountScript = redis.NewScript(activeCountLua + `return active_count(KEYS[1], KEYS[2], KEYS[3], ARGV[1])`)

// ActiveCount returns how many of tenantID's certificates are active
// (neither revoked nor expired): what its client_certificates quota
// counts.
func (s *Store) ActiveCount(ctx context.Context, tenantID string) (int64, error) {
	n, err := activeCountScript.Run(ctx, s.rdb, []string{tenantCertsKey(tenantID), tenantActiveKey(tenantID),
		tenantCountedKey(tenantID)}, s.cfg.Now().UnixMilli()).Int64()
	if err != nil {
		return 0, fmt.Errorf("count active client certificates of %s: %w", tenantID, err)
	}
	return n, nil
}

// quotaLimit is tenantID's effective quota of active client certificates
// (0: unlimited). Its overrides live in the tenant's slot, not the CA's,
// so the limit is read here and the store script counts against it: the
// count and the issue are one step, an override applies from the next
// issue.
func (s *Store) quotaLimit(ctx context.Context, tenantID string) (int64, error) {
	l, err := quota.Effective(ctx, s.rdb, tenantID, s.cfg.Quotas)
	if err != nil {
		return 0, err
	}
	return l[quota.ClientCerts], nil
}

func (s *Store) store(ctx context.Context, c Cert, iss issued, sealedKey string, ren *renewal) (string, error) {
	rec := []any{
		"tenant_id", c.TenantID, "common_name", c.CommonName, "email", c.Email,
		"organization", c.Organization, "organizational_unit", c.OrganizationalUnit,
		"cert_usage", c.Usage, "notes", c.Notes, "serial", c.Serial.String(),
		"created_at", c.CreatedAt.UnixMilli(), "expires_at", c.ExpiresAt.UnixMilli(),
		"renewal_enabled", boolStr(c.RenewalEnabled), "renewal_threshold_days", c.RenewalThresholdDays,
		"key_generated", boolStr(c.KeyGenerated), "days_valid", c.DaysValid, "key_type", c.KeyType,
		"sha256", c.SHA256, "cert_pem", string(iss.certPEM), "csr_pem", string(iss.csrPEM),
	}
	if sealedKey != "" {
		rec = append(rec, "key_sealed", sealedKey)
	}
	if c.RenewedFrom != "" {
		rec = append(rec, "renewed_from", c.RenewedFrom)
	}
	if c.Idem != "" {
		rec = append(rec, "idem", c.Idem)
	}
	due := ""
	if c.RenewalEnabled {
		due = strconv.FormatInt(c.renewalDue().UnixMilli(), 10)
	}
	issuedEv, err := eventFields(events.ClientCertIssued, c.TenantID, c.ID, c.CreatedAt, events.ClientCertIssuedV1{
		CertID: c.ID, CommonName: c.CommonName, Email: c.Email, Organization: c.Organization,
		OrganizationalUnit: c.OrganizationalUnit, Usage: c.Usage, Serial: c.Serial.String(), SHA256: c.SHA256,
		NotBefore: iss.cert.NotBefore.UTC(), NotAfter: iss.cert.NotAfter.UTC(), KeyGenerated: c.KeyGenerated,
		RenewalEnabled: c.RenewalEnabled, RenewedFrom: c.RenewedFrom,
	})
	if err != nil {
		return "", err
	}
	oldID, auto := "", ""
	keys := []string{certKey(c.ID), tenantCertsKey(c.TenantID), serialsKey, renewalKey, events.CAStream,
		tenantActiveKey(c.TenantID), tenantCountedKey(c.TenantID)}
	var renewedEv []any
	if ren != nil {
		oldID = ren.old.ID
		if ren.automatic {
			auto = "1"
		}
		keys = append(keys, certKey(oldID))
		renewedEv, err = eventFields(events.ClientCertRenewed, c.TenantID, oldID, c.CreatedAt, events.ClientCertRenewedV1{
			CertID: oldID, NewCertID: c.ID, OldSerial: ren.old.Serial.String(), NewSerial: c.Serial.String(),
			Automatic: ren.automatic,
		})
		if err != nil {
			return "", err
		}
	}
	// Auto-renewal is never refused for the quota: it renews a certificate
	// once, when due, and letting it fail would let the tenant's
	// certificates lapse. A renewal asked for is counted like a creation:
	// the old certificate stays active until it expires.
	var limit int64
	if ren == nil || !ren.automatic {
		if limit, err = s.quotaLimit(ctx, c.TenantID); err != nil {
			return "", err
		}
	}
	args := []any{c.ID, c.TenantID, c.Serial.String(), c.CreatedAt.UnixMilli(), due, s.cfg.MaxLen, oldID, auto,
		c.CreatedAt.UnixMilli(), limit, c.ExpiresAt.UnixMilli(), len(rec)}
	args = append(args, rec...)
	args = append(args, len(issuedEv))
	args = append(args, issuedEv...)
	args = append(args, renewedEv...)
	res, err := s.commands.RunScript(ctx, storeCertScript, keys, args...).Text()
	if err != nil {
		return "", fmt.Errorf("store client certificate %s: %w", c.ID, err)
	}
	return res, nil
}

// renewalDue is when auto-renewal renews c.
func (c Cert) renewalDue() time.Time {
	return c.ExpiresAt.Add(-time.Duration(c.RenewalThresholdDays) * 24 * time.Hour)
}

func boolStr(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Get returns tenantID's certificate id; ErrNotFound when there is none,
// or it is another tenant's.
func (s *Store) Get(ctx context.Context, tenantID, id string) (Cert, error) {
	if !ValidID(id) {
		return Cert{}, ErrNotFound
	}
	rec, err := s.rdb.HGetAll(ctx, certKey(id)).Result()
	if err != nil {
		return Cert{}, fmt.Errorf("read client certificate %s: %w", id, err)
	}
	if rec["tenant_id"] == "" || rec["tenant_id"] != tenantID {
		return Cert{}, ErrNotFound
	}
	return certFromRecord(id, rec), nil
}

// BySerial returns the certificate with serial, of any tenant: OCSP's
// lookup. ErrNotFound when this CA never issued it.
func (s *Store) BySerial(ctx context.Context, serial *big.Int) (Cert, error) {
	if serial == nil || serial.Sign() <= 0 {
		return Cert{}, ErrNotFound
	}
	id, err := s.rdb.HGet(ctx, serialsKey, serial.String()).Result()
	if errors.Is(err, redis.Nil) {
		return Cert{}, ErrNotFound
	}
	if err != nil {
		return Cert{}, fmt.Errorf("look up serial %s: %w", serial, err)
	}
	rec, err := s.rdb.HGetAll(ctx, certKey(id)).Result()
	if err != nil {
		return Cert{}, fmt.Errorf("read client certificate %s: %w", id, err)
	}
	if rec["tenant_id"] == "" {
		return Cert{}, ErrNotFound
	}
	return certFromRecord(id, rec), nil
}

// recordFields are what List and Get read (not the PEMs, nor the key).
var recordFields = []string{"tenant_id", "common_name", "email", "organization", "organizational_unit",
	"cert_usage", "notes", "serial", "created_at", "expires_at", "revoked_at", "reason", "renewal_enabled",
	"renewal_threshold_days", "key_generated", "renewed_from", "renewed_by", "days_valid", "key_type", "sha256",
	"issued_entry", "idem"}

func certFromRecord(id string, rec map[string]string) Cert {
	serial, _ := new(big.Int).SetString(rec["serial"], 10)
	threshold, _ := strconv.Atoi(rec["renewal_threshold_days"])
	days, _ := strconv.Atoi(rec["days_valid"])
	c := Cert{
		issuedEntry: rec["issued_entry"],
		ID:          id, TenantID: rec["tenant_id"], CommonName: rec["common_name"], Email: rec["email"],
		Organization: rec["organization"], OrganizationalUnit: rec["organizational_unit"], Usage: rec["cert_usage"],
		Notes: rec["notes"], Serial: serial, CreatedAt: msTime(rec["created_at"]), ExpiresAt: msTime(rec["expires_at"]),
		Reason: rec["reason"], RenewalEnabled: rec["renewal_enabled"] == "1", RenewalThresholdDays: threshold,
		KeyGenerated: rec["key_generated"] == "1", RenewedFrom: rec["renewed_from"], RenewedBy: rec["renewed_by"],
		DaysValid: days, KeyType: rec["key_type"], SHA256: rec["sha256"], Idem: rec["idem"],
	}
	if rec["revoked_at"] != "" {
		t := msTime(rec["revoked_at"])
		c.Revoked, c.RevokedAt = true, &t
	}
	return c
}

func msTime(s string) time.Time {
	ms, _ := strconv.ParseInt(s, 10, 64)
	return time.UnixMilli(ms).UTC()
}

// List returns tenantID's certificates matching f, newest first.
func (s *Store) List(ctx context.Context, tenantID string, f Filter) ([]Cert, error) {
	ids, err := s.rdb.ZRevRange(ctx, tenantCertsKey(tenantID), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("list client certificates of %s: %w", tenantID, err)
	}
	out := make([]Cert, 0, len(ids))
	search := strings.ToLower(f.Search)
	// In chunks, so that a tenant with many certificates does not make one
	// huge pipeline.
	for chunk := range slices.Chunk(ids, 500) {
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.SliceCmd, len(chunk))
		for i, id := range chunk {
			cmds[i] = pipe.HMGet(ctx, certKey(id), recordFields...)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("list client certificates of %s: %w", tenantID, err)
		}
		for i, cmd := range cmds {
			rec := make(map[string]string, len(recordFields))
			for j, v := range cmd.Val() {
				if sv, ok := v.(string); ok {
					rec[recordFields[j]] = sv
				}
			}
			if rec["tenant_id"] != tenantID {
				continue
			}
			c := certFromRecord(chunk[i], rec)
			if f.Usage != "" && c.Usage != f.Usage ||
				f.Revoked != nil && c.Revoked != *f.Revoked ||
				search != "" && !strings.Contains(strings.ToLower(c.CommonName), search) {
				continue
			}
			out = append(out, c)
		}
	}
	// Newest first; of one millisecond, the later issued (records from
	// before issued_entry keep the set's order).
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.After(out[j].CreatedAt)
		}
		return stream.CompareIDs(out[i].issuedEntry, out[j].issuedEntry) > 0
	})
	return out, nil
}

// Download kinds.
const (
	DownloadCert = "crt"
	DownloadKey  = "key"
	DownloadCSR  = "csr"
)

// Download returns tenantID's certificate id as PEM: kind "crt" (the
// certificate), "key" (the private key, only when certfleet generated it:
// ErrNoKey otherwise; needs the passphrase) or "csr".
func (s *Store) Download(ctx context.Context, tenantID, id, kind string) ([]byte, error) {
	field := map[string]string{DownloadCert: "cert_pem", DownloadKey: "key_sealed", DownloadCSR: "csr_pem"}[kind]
	if field == "" {
		return nil, invalid("download type must be crt, key or csr, got %q", kind)
	}
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	vals, err := s.rdb.HMGet(ctx, certKey(id), "tenant_id", field).Result()
	if err != nil {
		return nil, fmt.Errorf("read client certificate %s: %w", id, err)
	}
	if t, _ := vals[0].(string); t == "" || t != tenantID {
		return nil, ErrNotFound
	}
	v, _ := vals[1].(string)
	switch {
	case kind == DownloadKey && v == "":
		return nil, ErrNoKey
	case kind == DownloadKey:
		box, err := s.sealBox(ctx)
		if err != nil {
			return nil, err
		}
		plain, err := box.Open(v, keyAAD(id))
		if err != nil {
			return nil, fmt.Errorf("open key of %s: %w", id, err)
		}
		return plain, nil
	case v == "":
		return nil, ErrNotFound
	default:
		return []byte(v), nil
	}
}

// Renew issues tenantID's certificate id again: same subject, usage, notes,
// validity and renewal settings, a new serial, and a new generated key (a
// certificate issued for a CSR is issued again for the same CSR's key: its
// holder keeps the private key). The old certificate stays valid until it
// expires or is revoked; it is marked renewed_by the new one, and cannot be
// renewed twice (ErrAlreadyRenewed). A revoked certificate is not renewed
// (ErrRevoked).
func (s *Store) Renew(ctx context.Context, tenantID, id string) (Cert, error) {
	return s.renew(ctx, tenantID, id, false)
}

// AutoRenew is Renew for the auto-renewal loop: it renews only when the
// certificate's renewal is enabled and due (ErrNotDue otherwise), checked
// in the same step as the renewal, so two loops never renew one twice.
func (s *Store) AutoRenew(ctx context.Context, tenantID, id string) (Cert, error) {
	return s.renew(ctx, tenantID, id, true)
}

func (s *Store) renew(ctx context.Context, tenantID, id string, automatic bool) (Cert, error) {
	old, err := s.Get(ctx, tenantID, id)
	if err != nil {
		return Cert{}, err
	}
	if old.Revoked {
		return Cert{}, ErrRevoked
	}
	if old.RenewedBy != "" {
		return Cert{}, fmt.Errorf("%w by %s", ErrAlreadyRenewed, old.RenewedBy)
	}
	enabled := old.RenewalEnabled
	req := CreateRequest{
		CommonName: old.CommonName, Email: old.Email, Organization: old.Organization,
		OrganizationalUnit: old.OrganizationalUnit, Usage: old.Usage, Notes: old.Notes, DaysValid: old.DaysValid,
		GenerateKey: old.KeyGenerated, RenewalEnabled: &enabled, RenewalThresholdDays: old.RenewalThresholdDays,
	}
	if req.DaysValid == 0 {
		req.DaysValid = DefaultDaysValid
	}
	var pub crypto.PublicKey
	var key crypto.Signer
	var csrPEM []byte
	if old.KeyGenerated {
		req.KeyType = old.KeyType
		if req.KeyType != KeyRSA2048 && req.KeyType != KeyRSA3072 {
			req.KeyType = KeyECDSAP256
		}
		if key, err = generateKey(req.KeyType); err != nil {
			return Cert{}, err
		}
		pub = key.Public()
	} else {
		if csrPEM, err = s.Download(ctx, tenantID, id, DownloadCSR); err != nil {
			return Cert{}, err
		}
		csr, err := parseCSR(csrPEM)
		if err != nil {
			return Cert{}, fmt.Errorf("renew %s: stored CSR: %w", id, err)
		}
		pub = csr.PublicKey
	}
	return s.issueAndStore(ctx, tenantID, req, pub, key, csrPEM, &renewal{old: old, automatic: automatic})
}

// Due is a certificate whose auto-renewal is due.
type Due struct {
	TenantID, ID string
	DueAt        time.Time
}

// DueForRenewal returns up to limit certificates (of every tenant) with
// renewal enabled, not revoked nor renewed, whose renewal time
// (expires_at - renewal_threshold_days) is at or before now, earliest
// first: the auto-renewal loop's work list (renew each with AutoRenew).
func (s *Store) DueForRenewal(ctx context.Context, now time.Time, limit int) ([]Due, error) {
	zs, err := s.rdb.ZRangeByScoreWithScores(ctx, renewalKey, &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(now.UnixMilli(), 10), Count: int64(limit),
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("list due renewals: %w", err)
	}
	out := make([]Due, 0, len(zs))
	for _, z := range zs {
		id, _ := z.Member.(string)
		tenant, err := s.rdb.HGet(ctx, certKey(id), "tenant_id").Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list due renewals: %w", err)
		}
		out = append(out, Due{TenantID: tenant, ID: id, DueAt: time.UnixMilli(int64(z.Score)).UTC()})
	}
	return out, nil
}
