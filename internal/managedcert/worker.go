package managedcert

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/quota"
)

// This file holds what the ACME worker (coordinator/acme) reads and writes.

// Due lists up to limit managed domains of partition tag due at or before
// now, as tenant and domain.
func (s *Store) Due(ctx context.Context, tag string, now time.Time, limit int) ([][2]string, error) {
	members, err := s.rdb.ZRangeByScore(ctx, DueKey(tag), &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(now.UnixMilli(), 10), Count: int64(limit)}).Result()
	if err != nil {
		return nil, fmt.Errorf("read schedule %s: %w", tag, err)
	}
	out := make([][2]string, 0, len(members))
	for _, m := range members {
		tenant, domain, ok := strings.Cut(m, "|")
		if !ok {
			s.rdb.ZRem(ctx, DueKey(tag), m) // not ours: never due again
			continue
		}
		out = append(out, [2]string{tenant, domain})
	}
	return out, nil
}

// DueCount is how many managed domains of partition tag are due at or
// before now: requests, renewals, retries and deletions waiting.
func (s *Store) DueCount(ctx context.Context, tag string, now time.Time) (int64, error) {
	n, err := s.rdb.ZCount(ctx, DueKey(tag), "-inf", strconv.FormatInt(now.UnixMilli(), 10)).Result()
	if err != nil {
		return 0, fmt.Errorf("count schedule %s: %w", tag, err)
	}
	return n, nil
}

// Unschedule drops tenant's domain from the schedule (its record is gone).
func (s *Store) Unschedule(ctx context.Context, tenant, domain string) error {
	return s.rdb.ZRem(ctx, DueKey(events.TenantTag(tenant)), DueMember(tenant, domain)).Err()
}

// ParseMaterial checks a certificate the CA returned and its key: the leaf
// first, then the chain, and a PEM private key. It fills the record's
// certificate facts.
func ParseMaterial(fullchainPEM, keyPEM []byte) (Material, *x509.Certificate, error) {
	block, rest := pem.Decode(fullchainPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return Material{}, nil, errors.New("the CA's answer holds no certificate")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return Material{}, nil, fmt.Errorf("parse the issued certificate: %w", err)
	}
	if k, _ := pem.Decode(keyPEM); k == nil {
		return Material{}, nil, errors.New("the private key is not PEM")
	}
	return Material{CertPEM: string(pem.EncodeToMemory(block)), ChainPEM: strings.TrimLeft(string(rest), "\n"),
		PrivateKeyPEM: keyPEM}, leaf, nil
}

// SaveIssued stores a new certificate of tenant's domain: its sealed key,
// its PEM files and facts, the next renewal, and the issued event (renewed
// when it replaces one). It returns the record written.
func (s *Store) SaveIssued(ctx context.Context, tenant, domain string, m Material, leaf *x509.Certificate, nextRenewal time.Time, renewalSource string) (Certificate, error) {
	box, err := s.sealBox(ctx)
	if err != nil {
		return Certificate{}, err
	}
	sealed, err := box.Seal(m.PrivateKeyPEM, keyAAD(tenant, domain))
	if err != nil {
		return Certificate{}, err
	}
	sum := sha256.Sum256(leaf.Raw)
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	return s.update(ctx, tenant, domain, func(c Certificate) (transition, error) {
		name, prev := events.CertificateIssued, ""
		if c.SHA256 != "" {
			name, prev = events.CertificateRenewed, c.SHA256
		}
		c.Status, c.Renewing, c.Error, c.Attempt, c.RetryAt = StatusIssued, false, "", 0, time.Time{}
		c.Serial, c.SHA256, c.Issuer = hex.EncodeToString(leaf.SerialNumber.Bytes()), hex.EncodeToString(sum[:]), issuerName(leaf)
		c.NotBefore, c.NotAfter, c.IssuedAt = leaf.NotBefore.UTC(), leaf.NotAfter.UTC(), now
		c.NextRenewal, c.RenewalSource = nextRenewal.UTC(), renewalSource
		due := c.NextRenewal
		if c.Deleting {
			due = now // the tenant asked for revocation meanwhile
		}
		return transition{next: &c, due: due,
			fields: []any{"cert_pem", m.CertPEM, "chain_pem", m.ChainPEM, "sealed_key", sealed},
			event:  name,
			detail: events.CertificateV1{Serial: c.Serial, SHA256: c.SHA256, Issuer: c.Issuer, NotBefore: c.NotBefore,
				NotAfter: c.NotAfter, PreviousSHA256: prev, NextRenewal: c.NextRenewal}}, nil
	})
}

// issuerName is the issuer as users know it: its common name, else its
// organization, else the whole name.
func issuerName(c *x509.Certificate) string {
	if c.Issuer.CommonName != "" {
		return c.Issuer.CommonName
	}
	if len(c.Issuer.Organization) > 0 {
		return c.Issuer.Organization[0]
	}
	return c.Issuer.String()
}

// SaveFailed records a failed order of tenant's domain: the error (meant
// for the tenant: an ACME problem or a provider's error, never a secret),
// the failures in a row, and the next attempt at retryAt. An issued
// certificate stays issued.
func (s *Store) SaveFailed(ctx context.Context, tenant, domain, reason string, retryAt time.Time) (Certificate, error) {
	return s.update(ctx, tenant, domain, func(c Certificate) (transition, error) {
		if c.Status != StatusIssued {
			c.Status = StatusFailed
		}
		c.Error, c.Attempt, c.RetryAt = reason, c.Attempt+1, retryAt.UTC()
		return transition{next: &c, due: retryAt, event: events.CertificateFailed,
			detail: events.CertificateV1{Error: reason, Attempt: c.Attempt, RetryAt: c.RetryAt}}, nil
	})
}

// Postpone moves tenant's domain to at without recording a failure (the
// tenant's daily order quota is spent, the CA asked to wait).
func (s *Store) Postpone(ctx context.Context, tenant, domain, why string, at time.Time) (Certificate, error) {
	return s.update(ctx, tenant, domain, func(c Certificate) (transition, error) {
		c.Error, c.RetryAt = why, at.UTC()
		return transition{next: &c, due: at}, nil
	})
}

// Remove drops tenant's domain after the worker revoked its certificate
// (or found nothing to revoke), with the deleted event.
func (s *Store) Remove(ctx context.Context, tenant, domain string, revoked bool) error {
	_, err := s.update(ctx, tenant, domain, func(Certificate) (transition, error) {
		return transition{event: events.CertificateDeleted, detail: events.CertificateV1{Revoked: revoked}}, nil
	})
	return err
}

// orderScript counts one order of a tenant for the day unless the quota is
// spent. KEYS: the day's counter, the tenant's quota overrides. ARGV: the
// default orders quota.
var orderScript = redis.NewScript(`
local limit = ` + quota.LuaLimit(2, 1, quota.CertOrders) + `
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if limit > 0 and n >= limit then return -limit end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], 172800)
return n + 1
`)

// CountOrder counts an order of tenant today; a *quota.Exceeded when the
// tenant's orders of the day are spent.
func (s *Store) CountOrder(ctx context.Context, tenant string) error {
	n, err := orderScript.Run(ctx, s.rdb, []string{OrdersKey(tenant, s.cfg.Now()), quota.Key(tenant)},
		s.cfg.Quotas[quota.CertOrders]).Int64()
	if err != nil {
		return fmt.Errorf("count order of %s: %w", tenant, err)
	}
	if n < 0 {
		return &quota.Exceeded{Resource: quota.CertOrders, Limit: -n}
	}
	return nil
}

// OrdersToday is how many orders tenant placed today.
func (s *Store) OrdersToday(ctx context.Context, tenant string) (int64, error) {
	n, err := s.rdb.Get(ctx, OrdersKey(tenant, s.cfg.Now())).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return n, err
}

// ACMEAccount is a tenant's account on one ACME directory.
type ACMEAccount struct {
	Email string `json:"email"`
	// URI is the account's URL at the CA ("" until registered).
	URI string `json:"uri"`
	// KeyPEM is the account key, opened; sealed at rest.
	KeyPEM []byte `json:"-"`
}

// ACMEAccount returns tenant's account on directoryURL, or ErrNotFound.
func (s *Store) ACMEAccount(ctx context.Context, tenant, directoryURL string) (ACMEAccount, error) {
	vals, err := s.rdb.HMGet(ctx, ACMEAccountKey(tenant, directoryURL), "rec", "sealed_key").Result()
	if err != nil {
		return ACMEAccount{}, fmt.Errorf("read ACME account of %s: %w", tenant, err)
	}
	raw, ok := vals[0].(string)
	sealed, _ := vals[1].(string)
	if !ok || sealed == "" {
		return ACMEAccount{}, ErrNotFound
	}
	var a ACMEAccount
	if err := json.Unmarshal([]byte(raw), &a); err != nil {
		return ACMEAccount{}, fmt.Errorf("decode ACME account of %s: %w", tenant, err)
	}
	box, err := s.sealBox(ctx)
	if err != nil {
		return ACMEAccount{}, err
	}
	if a.KeyPEM, err = box.Open(sealed, acmeKeyAAD(tenant, directoryURL)); err != nil {
		return ACMEAccount{}, fmt.Errorf("open ACME account key of %s: %w", tenant, err)
	}
	return a, nil
}

// PutACMEAccount stores tenant's account on directoryURL, its key sealed.
func (s *Store) PutACMEAccount(ctx context.Context, tenant, directoryURL string, a ACMEAccount) error {
	box, err := s.sealBox(ctx)
	if err != nil {
		return err
	}
	sealed, err := box.Seal(a.KeyPEM, acmeKeyAAD(tenant, directoryURL))
	if err != nil {
		return err
	}
	body, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("encode ACME account: %w", err)
	}
	if err := s.rdb.HSet(ctx, ACMEAccountKey(tenant, directoryURL), "rec", string(body), "sealed_key", sealed).Err(); err != nil {
		return fmt.Errorf("save ACME account of %s: %w", tenant, err)
	}
	return nil
}
