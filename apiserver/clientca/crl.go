package clientca

// Certificate revocation lists (RFC 5280 v2), signed by the CA.
//
// One CRL covers the whole CA (every tenant's revoked certificates): it is
// what relying parties download from the distribution point the
// certificates name. It is cached in Redis and replaced when a revocation
// happened since it was built (RevocationVersionKey moved), when the CA is
// not the one that signed it, or when its nextUpdate is near. One replica at
// a time builds the next one, under a lock; the others wait for it, so the
// CRL number rises by exactly one per CRL whatever the number of replicas:
//
//	crl:{ca}        hash {der, number, this_update, next_update (unix ms),
//	                version (the revocation version it covers),
//	                ca (hex SHA-256 of the CA certificate it is signed by)}
//	crl:{ca}:lock   the token of the replica building the next CRL (PX)
//
// The commit script writes a new CRL only while its writer holds the lock
// and only over the number it was built after, so a writer whose lock
// expired mid-build (a stalled process) cannot publish a duplicate number.
//
// The commit does not wait for replicas (Config.Wait), on purpose: a CRL
// is derived from ca:{ca}:revoked and the revocation version, which every
// revocation waits for, so a CRL lost in a failover is rebuilt, with every
// acknowledged revocation, on the next download. Waiting would instead
// make the distribution point fail while a replica is down, which relying
// parties that fail closed turn into refusing every client. The cost: the
// rebuilt CRL reuses the lost one's number (RFC 5280 wants it to rise);
// relying parties that fetched the lost one hold it until its nextUpdate
// or the next CRL, whose later thisUpdate supersedes it.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/internal/lease"
)

const (
	crlKey     = "crl:{ca}"
	crlLockKey = "crl:{ca}:lock"
	// crlLockTTL bounds how long a crashed writer holds the lock; building
	// a CRL of 100,000 entries takes well under a second.
	crlLockTTL = 10 * time.Second
	// crlWait is how long a reader waits for another replica's CRL before
	// it serves the cached one (if still valid) or fails.
	crlWait = 5 * time.Second
	// crlPoll is how often a waiting reader looks again.
	crlPoll = 10 * time.Millisecond
)

// DefaultCRLValidity is a CRL's lifetime when CRLOptions.Validity is zero.
const DefaultCRLValidity = 24 * time.Hour

// ErrCRLBusy: another replica holds the CRL lock for longer than a reader
// waits, and no valid CRL is cached.
var ErrCRLBusy = errors.New("another replica is building the CRL")

// issuer returns the CA certificate, and the CA with its signer when this
// process can sign (nil without a passphrase): Authority is cached in the
// process, Info needs no passphrase but reads Redis every time.
func (s *Store) issuer(ctx context.Context) (*x509.Certificate, *Authority, error) {
	auth, err := s.Authority(ctx)
	if err == nil {
		return auth.Cert, auth, nil
	}
	if !errors.Is(err, ErrNoPassphrase) {
		return nil, nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, nil, err
	}
	return info.Cert, nil, nil
}

// CRLOptions are the CRL settings of the caller (the apiserver's flags).
type CRLOptions struct {
	// Validity is the time from a CRL's thisUpdate to its nextUpdate.
	// Default DefaultCRLValidity (24h). A CRL is replaced once less than a
	// quarter of it is left, so relying parties fetching near nextUpdate get
	// one that lasts.
	Validity time.Duration
}

func (o *CRLOptions) setDefaults() {
	if o.Validity <= 0 {
		o.Validity = DefaultCRLValidity
	}
}

// CRL is the current certificate revocation list.
type CRL struct {
	// DER is the signed CRL.
	DER []byte
	// Number is its cRLNumber: 1 for the first CRL, one more for each.
	Number int64
	// ThisUpdate and NextUpdate are its validity.
	ThisUpdate, NextUpdate time.Time
	// Issuer is the CA's subject (RFC 2253 form).
	Issuer string

	version int64  // the revocation version it covers
	ca      string // hex SHA-256 of the signing CA certificate
}

// PEM returns the CRL in PEM ("X509 CRL").
func (c *CRL) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: c.DER})
}

// Entries returns the CRL's revoked certificates, in serial order.
func (c *CRL) Entries() ([]x509.RevocationListEntry, error) {
	rl, err := x509.ParseRevocationList(c.DER)
	if err != nil {
		return nil, fmt.Errorf("parse CRL: %w", err)
	}
	return rl.RevokedCertificateEntries, nil
}

// fresh tells whether c may be served at now: built by ca, covering
// revocation version, and with more than a quarter of its validity left.
func (c *CRL) fresh(version int64, ca string, now time.Time, opts CRLOptions) bool {
	return c.version >= version && c.ca == ca && now.Before(c.NextUpdate.Add(-opts.Validity/4))
}

// CRL returns the current CRL, building and signing a new one (as the only
// writer across replicas) when a revocation happened since the cached one,
// or its nextUpdate is near. ErrNoCA when there is no CA; when this
// process cannot sign (ErrNoPassphrase) or another replica holds the lock
// too long, a cached CRL that is still valid is served instead of failing.
func (s *Store) CRL(ctx context.Context, opts CRLOptions) (*CRL, error) {
	opts.setDefaults()
	cert, auth, err := s.issuer(ctx)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(cert.Raw)
	ca := hex.EncodeToString(sum[:])
	deadline := time.Now().Add(crlWait)
	for {
		cached, version, err := s.cachedCRL(ctx)
		if err != nil {
			return nil, err
		}
		now := s.cfg.Now()
		if cached != nil && cached.fresh(version, ca, now, opts) {
			return cached, nil
		}
		token := lease.NewToken()
		ok, err := lease.Acquire(ctx, s.rdb, crlLockKey, token, crlLockTTL)
		if err != nil {
			return nil, err
		}
		if ok {
			crl, err := s.buildCRL(ctx, auth, ca, token, opts)
			s.unlockCRL(token)
			if err != nil {
				return servable(cached, ca, now, err, s.logger)
			}
			return crl, nil
		}
		if time.Now().After(deadline) {
			return servable(cached, ca, now, ErrCRLBusy, s.logger)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(crlPoll):
		}
	}
}

// servable returns cached when a new CRL could not be had (err) but cached
// is by the same CA and still within its validity: a CRL a little behind
// the revocations beats none.
func servable(cached *CRL, ca string, now time.Time, err error, logger *zap.Logger) (*CRL, error) {
	if cached != nil && cached.ca == ca && now.Before(cached.NextUpdate) {
		logger.Warn("serving the cached crl", zap.Int64("number", cached.Number), zap.Error(err))
		return cached, nil
	}
	return nil, err
}

// cachedCRL reads the cached CRL (nil when none) and the current
// revocation version, in one round trip.
func (s *Store) cachedCRL(ctx context.Context) (*CRL, int64, error) {
	pipe := s.rdb.Pipeline()
	h := pipe.HGetAll(ctx, crlKey)
	v := pipe.Get(ctx, RevocationVersionKey)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, 0, fmt.Errorf("read CRL: %w", err)
	}
	version, err := v.Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, 0, fmt.Errorf("read revocation version: %w", err)
	}
	m := h.Val()
	if len(m) == 0 {
		return nil, version, nil
	}
	crl, err := crlFromHash(m)
	if err != nil {
		return nil, 0, err
	}
	return crl, version, nil
}

func crlFromHash(m map[string]string) (*CRL, error) {
	var ints [4]int64
	for i, f := range []string{"number", "this_update", "next_update", "version"} {
		n, err := strconv.ParseInt(m[f], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("read CRL: field %s: %w", f, err)
		}
		ints[i] = n
	}
	return &CRL{
		DER:        []byte(m["der"]),
		Number:     ints[0],
		ThisUpdate: time.UnixMilli(ints[1]).UTC(),
		NextUpdate: time.UnixMilli(ints[2]).UTC(),
		Issuer:     m["issuer"],
		version:    ints[3],
		ca:         m["ca"],
	}, nil
}

// commitCRL publishes a CRL if the writer still holds the lock and the
// cached CRL is still the one it built after (its number is ARGV[2]).
//
//	KEYS[1] crl hash, KEYS[2] lock
//	ARGV[1] token, ARGV[2] previous number ("0": none), ARGV[3..] fields
var commitCRL = redis.NewScript(`
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local cur = redis.call('HGET', KEYS[1], 'number') or '0'
if cur ~= ARGV[2] then return 0 end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
return 1
`)

func (s *Store) unlockCRL(token string) {
	// The lock is released even when the request's ctx ended: otherwise
	// other replicas wait for its expiry.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := lease.Release(ctx, s.rdb, crlLockKey, token); err != nil {
		s.logger.Warn("release crl lock", zap.Error(err))
	}
}

// buildCRL signs the next CRL while holding the lock (token); auth is nil
// when this process cannot sign.
func (s *Store) buildCRL(ctx context.Context, auth *Authority, ca, token string, opts CRLOptions) (*CRL, error) {
	// Read again under the lock: another writer may have published the
	// CRL this one waited for. The version is read before the
	// revocations, so a revocation landing in between makes the next
	// reader build again rather than be lost.
	cached, version, err := s.cachedCRL(ctx)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	if cached != nil && cached.fresh(version, ca, now, opts) {
		return cached, nil
	}
	if auth == nil {
		return nil, ErrNoPassphrase
	}
	revs, err := s.Revocations(ctx)
	if err != nil {
		return nil, err
	}
	var prev int64
	if cached != nil {
		prev = cached.Number
	}
	entries := make([]x509.RevocationListEntry, 0, len(revs))
	for _, r := range revs {
		// unspecified (0) leaves the entry without a reasonCode, as RFC
		// 5280 5.3.1 asks.
		entries = append(entries, x509.RevocationListEntry{
			SerialNumber:   r.Serial,
			RevocationTime: r.RevokedAt.UTC().Truncate(time.Second),
			ReasonCode:     r.ReasonCode,
		})
	}
	this := now.UTC().Truncate(time.Second)
	crl := &CRL{
		Number:     prev + 1,
		ThisUpdate: this,
		NextUpdate: this.Add(opts.Validity),
		Issuer:     auth.Cert.Subject.String(),
		version:    version,
		ca:         ca,
	}
	crl.DER, err = x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(crl.Number),
		ThisUpdate:                crl.ThisUpdate,
		NextUpdate:                crl.NextUpdate,
		RevokedCertificateEntries: entries,
	}, auth.Cert, auth.Signer)
	if err != nil {
		return nil, fmt.Errorf("sign CRL: %w", err)
	}
	ok, err := commitCRL.Run(ctx, s.rdb, []string{crlKey, crlLockKey}, token, strconv.FormatInt(prev, 10),
		"der", crl.DER, "number", crl.Number, "this_update", crl.ThisUpdate.UnixMilli(),
		"next_update", crl.NextUpdate.UnixMilli(), "version", version, "issuer", crl.Issuer, "ca", ca).Int()
	if err != nil {
		return nil, fmt.Errorf("store CRL: %w", err)
	}
	if ok != 1 {
		return nil, errors.New("store CRL: lost the CRL lock while signing")
	}
	s.logger.Info("crl published", zap.Int64("number", crl.Number), zap.Int("revoked", len(entries)),
		zap.Time("next_update", crl.NextUpdate))
	return crl, nil
}
