package clientca

import (
	"context"
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
)

// RFC 5280 reason names (section 5.3.1) and their CRLReason codes. Code 7
// is unused; removeFromCRL (8) is not a reason a revocation gives.
var reasonCodes = map[string]int{
	"unspecified":          0,
	"keyCompromise":        1,
	"cACompromise":         2,
	"affiliationChanged":   3,
	"superseded":           4,
	"cessationOfOperation": 5,
	"certificateHold":      6,
	"privilegeWithdrawn":   9,
	"aACompromise":         10,
}

// reasonAliases are names other tools give: CertMate's "compromised", and
// the snake_case and lower-case spellings.
var reasonAliases = map[string]string{
	"compromised":            "keyCompromise",
	"key_compromise":         "keyCompromise",
	"ca_compromise":          "cACompromise",
	"affiliation_changed":    "affiliationChanged",
	"cessation_of_operation": "cessationOfOperation",
	"certificate_hold":       "certificateHold",
	"privilege_withdrawn":    "privilegeWithdrawn",
	"aa_compromise":          "aACompromise",
}

// NormalizeReason returns the RFC 5280 name of a revocation reason given
// as that name (any case), CertMate's "compromised", or snake_case; "" is
// "unspecified". ok is false for anything else.
func NormalizeReason(reason string) (name string, ok bool) {
	reason = strings.TrimSpace(reason)
	if reason == "" {
		return "unspecified", true
	}
	if n, ok := reasonAliases[strings.ToLower(reason)]; ok {
		return n, true
	}
	for n := range reasonCodes {
		if strings.EqualFold(n, reason) {
			return n, true
		}
	}
	return "", false
}

// ReasonCode is the CRLReason code of an RFC 5280 reason name (as
// NormalizeReason returns), for CRL entries and OCSP responses.
func ReasonCode(name string) int {
	if c, ok := reasonCodes[name]; ok {
		return c
	}
	return 0
}

// caReasons are the reasons that say an authority's own key is
// compromised. They are the operator's to give, never a tenant's: on the
// one CRL every tenant's relying parties read, a tenant's cACompromise
// would claim the shared CA compromised, and each one would stay on the
// CRL until the CA expires.
var caReasons = map[string]bool{"cACompromise": true, "aACompromise": true}

// ReasonNames lists the RFC 5280 names a tenant's revocation may give, for
// error messages.
func ReasonNames() []string {
	names := make([]string, 0, len(reasonCodes))
	for n := range reasonCodes {
		if !caReasons[n] {
			names = append(names, n)
		}
	}
	sort.Slice(names, func(i, j int) bool { return reasonCodes[names[i]] < reasonCodes[names[j]] })
	return names
}

// Revocation is one CRL entry.
type Revocation struct {
	Serial    *big.Int
	RevokedAt time.Time
	// Reason is the RFC 5280 name; ReasonCode its CRLReason code.
	Reason     string
	ReasonCode int
}

// revokeScript revokes a live certificate of a tenant: marks the record
// (OCSP reads it), adds the CRL entry, bumps the revocation version,
// drops it from the renewal schedule and appends the event, in one step.
//
// KEYS: clientcert:<id>, ca:revoked, ca:revocations:version,
// clientcerts:renewal, events stream, the tenant's active set. ARGV:
// tenant, now ms, reason, id, maxlen, then the event's fields. Returns
// "revoked", "not-found" or "already".
var revokeScript = redis.NewScript(`
local rec = redis.call('HMGET', KEYS[1], 'tenant_id', 'revoked_at', 'serial')
if rec[1] ~= ARGV[1] then return 'not-found' end
if rec[2] then return 'already' end
redis.call('HSET', KEYS[1], 'revoked_at', ARGV[2], 'reason', ARGV[3])
redis.call('HSET', KEYS[2], rec[3], ARGV[2] .. ' ' .. ARGV[3])
redis.call('INCR', KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[4])
redis.call('ZREM', KEYS[6], ARGV[4])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[5], '*', unpack(ARGV, 6))
return 'revoked'
`)

// Revoke revokes tenantID's certificate id for reason (see
// NormalizeReason; stored as the RFC 5280 name) at once on every replica:
// OCSP answers revoked from now on, and the CRL writer sees the
// revocation version move. ErrNotFound for another tenant's,
// ErrAlreadyRevoked for a revoked one. cACompromise and aACompromise are
// refused (ErrInvalid): see caReasons.
func (s *Store) Revoke(ctx context.Context, tenantID, id, reason string) (Cert, error) {
	name, ok := NormalizeReason(reason)
	if !ok || caReasons[name] {
		return Cert{}, invalid("reason must be one of %s (or compromised), got %q", strings.Join(ReasonNames(), ", "), reason)
	}
	c, err := s.Get(ctx, tenantID, id)
	if err != nil {
		return Cert{}, err
	}
	if c.Revoked {
		return Cert{}, ErrAlreadyRevoked
	}
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	ev, err := eventFields(events.ClientCertRevoked, tenantID, id, now, events.ClientCertRevokedV1{
		CertID: id, Serial: c.Serial.String(), Reason: name, RevokedAt: now,
	})
	if err != nil {
		return Cert{}, err
	}
	args := append([]any{tenantID, now.UnixMilli(), name, id, s.cfg.MaxLen}, ev...)
	res, err := s.commands.RunScript(ctx, revokeScript,
		[]string{certKey(id), revokedKey, RevocationVersionKey, renewalKey, events.CAStream, tenantActiveKey(tenantID)}, args...).Text()
	if err != nil {
		return Cert{}, fmt.Errorf("revoke client certificate %s: %w", id, err)
	}
	switch res {
	case "revoked":
	case "not-found":
		return Cert{}, ErrNotFound
	case "already":
		return Cert{}, ErrAlreadyRevoked
	default:
		return Cert{}, fmt.Errorf("revoke client certificate %s: unexpected script result %q", id, res)
	}
	s.logger.Info("client certificate revoked", zap.String("tenant_id", tenantID), zap.String("cert_id", id),
		zap.String("serial", c.Serial.String()), zap.String("reason", name))
	c.Revoked, c.RevokedAt, c.Reason = true, &now, name
	return c, nil
}

// Revocations returns every revoked serial of the CA, of all tenants,
// ordered by serial: the CRL's entries. Expired certificates stay listed
// (removing them is the CRL writer's choice).
func (s *Store) Revocations(ctx context.Context) ([]Revocation, error) {
	m, err := s.rdb.HGetAll(ctx, revokedKey).Result()
	if err != nil {
		return nil, fmt.Errorf("read revocations: %w", err)
	}
	out := make([]Revocation, 0, len(m))
	for serial, v := range m {
		n, ok := new(big.Int).SetString(serial, 10)
		if !ok {
			continue
		}
		msStr, reason, _ := strings.Cut(v, " ")
		ms, _ := strconv.ParseInt(msStr, 10, 64)
		out = append(out, Revocation{Serial: n, RevokedAt: time.UnixMilli(ms).UTC(), Reason: reason, ReasonCode: ReasonCode(reason)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Serial.Cmp(out[j].Serial) < 0 })
	return out, nil
}

// RevocationVersion is the number of revocations so far: it moves with
// every Revoke, in the same step as the record.
func (s *Store) RevocationVersion(ctx context.Context) (int64, error) {
	n, err := s.rdb.Get(ctx, RevocationVersionKey).Int64()
	if err == redis.Nil {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read revocation version: %w", err)
	}
	return n, nil
}
