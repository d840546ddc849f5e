package accounts

// Held keys. The KeyChest claim calls hand a key for an account to anyone
// who knows its email, so such a key starts held (Config.HoldClaims): it
// may add domains, up to HeldQuota of them, and read the domains it added,
// nothing else of the account; domains it added raise no alerts. The
// account approves it (ApproveKey, from the v1 API or the link mailed to
// the account) and it becomes a full KeyChest key.
//
// Held keys and their domains do not count against the account's api_keys
// and domains quotas: anyone who knows the email can claim, and a flood
// of claims must never take the owner's room. They count against quotas
// of their own instead (internal/quota): held_api_keys, the keys waiting
// for approval (default 5), and held_domains, the domains they added
// together (default 100), on top of each key's HeldQuota. Approval moves
// the key and its domains into api_keys and domains, and is refused when
// that would pass them. Held keys claimed before these quotas existed are
// not in the tenant's held keys: they counted against api_keys then and
// still do (and their domains against domains), until approved or revoked.
//
// Re-adding a domain the account already has answers as for a new one but
// puts it in no held key's set: a held key learns nothing about the
// account's domains by adding them.
//
// Redis layout (in addition to the package doc's):
//
//	tenant:{tNN}:<tenant_id>:held:<key_id>   set of the domain ids that held key added
//	tenant:{tNN}:<tenant_id>:heldkeys        set of the ids of the tenant's held keys
//	tenant:{tNN}:<tenant_id>:helddomains     set of the ids of the domains its held keys added

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/domainindex"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/quota"
)

// DefaultHeldQuota is how many domains a held key may add.
const DefaultHeldQuota = 100

// HeldQuotaError is an add by a held key that has added its quota.
type HeldQuotaError struct{ Limit int64 }

func (e *HeldQuotaError) Error() string {
	return fmt.Sprintf("quota exceeded: a key not approved by its account may add at most %d servers; "+
		"ask the account to approve it", e.Limit)
}

func heldDomainsKey(tenantID, keyID string) string {
	return events.TenantNamespace(tenantID) + "held:" + keyID
}

// heldKeysKey is the set of tenantID's held keys: what held_api_keys
// counts, and what api_keys does not.
func heldKeysKey(tenantID string) string {
	return events.TenantNamespace(tenantID) + "heldkeys"
}

// tenantHeldDomainsKey is the set of the domains tenantID's held keys
// added: what held_domains counts, and what domains does not.
func tenantHeldDomainsKey(tenantID string) string {
	return events.TenantNamespace(tenantID) + "helddomains"
}

// CanRead tells whether p may read the domain id: every domain of its
// tenant, or for a held key only those it added. A refusal is
// ErrUnknownDomain, as for another tenant's domain.
func (s *Store) CanRead(ctx context.Context, p Principal, domainID string) error {
	if !p.Held {
		return nil
	}
	ok, err := s.rdb.SIsMember(ctx, heldDomainsKey(p.TenantID, p.KeyID), domainID).Result()
	if err != nil {
		return fmt.Errorf("check domain %s of held key %s: %w", domainID, p.KeyID, err)
	}
	if !ok {
		return ErrUnknownDomain
	}
	return nil
}

// IsHeld tells, for each domain id of tenantID, whether a held key added
// it: such a domain raises no alerts until the key is approved. A domain
// that does not exist is not held.
func (s *Store) IsHeld(ctx context.Context, tenantID string, domainIDs []string) ([]bool, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(domainIDs))
	for i, id := range domainIDs {
		cmds[i] = HeldCmd(ctx, pipe, tenantID, id)
	}
	if len(domainIDs) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("read held domains of %s: %w", tenantID, err)
		}
	}
	out := make([]bool, len(domainIDs))
	for i, c := range cmds {
		out[i] = c.Val() > 0
	}
	return out, nil
}

// HeldCmd queues on pipe the read that tells whether a held key added the
// domain: its value is positive when it did. It is for readers that batch
// other reads of the domain's slot with it (the alert engine).
func HeldCmd(ctx context.Context, pipe redis.Pipeliner, tenantID, domainID string) *redis.IntCmd {
	return pipe.HStrLen(ctx, domainKey(tenantID, domainID), "held_by")
}

// approveScript releases the domains a held key added, which moves their
// records' rev and the tenant's record generation on
// (domainindex.GenKey), moves the key and its domains from the held
// quotas into api_keys and domains (refused when that would pass them),
// and appends apikey.approved, if the key is still the tenant's.
//
// KEYS: tenant:<tenant>:apikeys, the key's held set, events stream, the
// tenant's index names (domainindex.HostKey), the tenant's quota
// overrides, the tenant's held keys, the tenant's held domains, then the
// domain:<id> key of every member of the set as read.
// ARGV: key id, key hash, maxlen, member count, default api_keys quota,
// default domains quota, the members (domain ids) in the order of their
// keys, then the event's fields.
// Returns "ok", "missing" (not the tenant's live key), "stale" (the set
// changed since it was read) or "quota:<resource>:<limit>".
var approveScript = redis.NewScript(domainindex.CountLua + domainindex.GenLua + `
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 'missing' end
local n = tonumber(ARGV[4])
if redis.call('SCARD', KEYS[2]) ~= n then return 'stale' end
-- A key or domain not in the tenant's held sets (held before they
-- existed) counts against api_keys and domains already.
local held_keys = redis.call('SCARD', KEYS[6])
if redis.call('SISMEMBER', KEYS[6], ARGV[1]) == 1 then
  local limit = ` + quota.LuaLimit(5, 5, quota.APIKeys) + `
  if limit > 0 and redis.call('HLEN', KEYS[1]) - held_keys + 1 > limit then return 'quota:` + string(quota.APIKeys) + `:' .. limit end
end
-- The domains this key still holds (releasing[i]), and of them those
-- that move from held_domains into domains.
local releasing, moving = {}, 0
for i = 1, n do
  releasing[i] = redis.call('HGET', KEYS[7 + i], 'held_by') == ARGV[1]
  if releasing[i] and redis.call('SISMEMBER', KEYS[7], ARGV[6 + i]) == 1 then
    moving = moving + 1
  end
end
local p = ` + domainindex.IndexPrefixLua("KEYS[4]") + `
if moving > 0 then
  local limit = ` + quota.LuaLimit(5, 6, quota.Domains) + `
  if limit > 0 and ix_count(p) - redis.call('SCARD', KEYS[7]) + moving > limit then
    return 'quota:` + string(quota.Domains) + `:' .. limit
  end
end
for i = 1, n do
  if releasing[i] then
    redis.call('HDEL', KEYS[7 + i], 'held_by')
    redis.call('HINCRBY', KEYS[7 + i], 'rev', 1)
  end
  redis.call('SREM', KEYS[7], ARGV[6 + i])
end
if n > 0 then ix_gen_bump(p) end
redis.call('SREM', KEYS[6], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 7 + n))
return 'ok'
`)

// ApproveKey approves the held key id of tenantID: it reads all of the
// account from now on, and the domains it added raise alerts from their
// next scan. The key then counts against the account's api_keys quota and
// its domains against domains: *quota.Exceeded when that would pass one,
// and the key stays held. Approving a key that is not held changes
// nothing. An unknown, revoked or other tenant's key id is
// ErrUnknownKeyID.
//
// The tenant's side goes first (domains released, event appended), the
// key record second: a crash in between leaves a key that is still held
// and an approval to run again, which finishes it.
func (s *Store) ApproveKey(ctx context.Context, tenantID, id string) (APIKey, error) {
	if uuid.Validate(id) != nil {
		return APIKey{}, ErrUnknownKeyID
	}
	hash, err := s.rdb.HGet(ctx, apiKeysKey(tenantID), id).Result()
	if errors.Is(err, redis.Nil) {
		return APIKey{}, ErrUnknownKeyID
	}
	if err != nil {
		return APIKey{}, fmt.Errorf("approve key %s of %s: %w", id, tenantID, err)
	}
	held, err := s.rdb.HGet(ctx, apiKeyKey(hash), "held").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return APIKey{}, fmt.Errorf("approve key %s of %s: %w", id, tenantID, err)
	}
	if held != "" {
		if err := s.releaseHeld(ctx, tenantID, id, hash); err != nil {
			return APIKey{}, err
		}
		if _, err := s.commands.Pipelined(ctx, apiKeyKey(hash), func(p redis.Pipeliner) error {
			return p.HDel(ctx, apiKeyKey(hash), "held").Err()
		}); err != nil {
			return APIKey{}, fmt.Errorf("approve key %s of %s: %w", id, tenantID, err)
		}
		s.logger.Info("api key approved", zap.String("tenant_id", tenantID), zap.String("key_id", id))
	}
	keys, err := s.ListKeys(ctx, tenantID)
	if err != nil {
		return APIKey{}, err
	}
	for _, k := range keys {
		if k.ID == id {
			return k, nil
		}
	}
	return APIKey{}, ErrUnknownKeyID
}

// releaseHeld runs approveScript, reading the held set again when another
// add changed it in between.
func (s *Store) releaseHeld(ctx context.Context, tenantID, id, hash string) error {
	setKey := heldDomainsKey(tenantID, id)
	for range staleRetries {
		members, err := s.rdb.SMembers(ctx, setKey).Result()
		if err != nil {
			return fmt.Errorf("approve key %s of %s: %w", id, tenantID, err)
		}
		ev, err := events.New(events.APIKeyApproved, tenantID, id, events.APIKeyApprovedV1{KeyID: id, Domains: members})
		if err != nil {
			return err
		}
		ev.OccurredAt = s.cfg.Now().UTC().Truncate(time.Millisecond)
		fields, err := ev.StreamFields()
		if err != nil {
			return err
		}
		keys := []string{apiKeysKey(tenantID), setKey, events.EventStream(tenantID), domainindex.HostKey(tenantID),
			quota.Key(tenantID), heldKeysKey(tenantID), tenantHeldDomainsKey(tenantID)}
		args := []any{id, hash, s.cfg.MaxLen, strconv.Itoa(len(members)), s.cfg.Quotas[quota.APIKeys], s.cfg.Quotas[quota.Domains]}
		for _, m := range members {
			keys = append(keys, domainKey(tenantID, m))
			args = append(args, m)
		}
		args = append(args, fields...)
		res, err := s.commands.RunScript(ctx, approveScript, keys, args...).Text()
		if err != nil {
			return fmt.Errorf("approve key %s of %s: %w", id, tenantID, err)
		}
		if ex := quota.ScriptExceeded(res, quota.APIKeys); ex != nil {
			return ex
		}
		switch res {
		case "ok":
			return nil
		case "missing":
			return ErrUnknownKeyID
		case "stale":
			continue
		default:
			return fmt.Errorf("approve key %s of %s: unexpected script result %q", id, tenantID, res)
		}
	}
	return fmt.Errorf("approve key %s of %s: its domains changed %d times while approving", id, tenantID, staleRetries)
}

// DomainIDCmd queues on pipe the lookup of the id of tenantID's host:port
// (LookupDomain's, for pipelines: a script, so a pipeline failing with
// NOSCRIPT runs domainindex.LoadLookup and again); domainindex.LookupID
// reads the id, "" when the tenant does not monitor it.
func DomainIDCmd(ctx context.Context, pipe redis.Pipeliner, tenantID, host string, port int) *redis.Cmd {
	return domainindex.LookupCmd(ctx, pipe, tenantID, host, port)
}
