package accounts

// API keys of the v1 REST API: "ssa_" keys with scopes, a label, an optional
// expiry, revocable. They live in the same apikey:<hash> hashes as KeyChest
// keys, with more fields:
//
//	apikey:<sha256 hex of key>   hash {tenant_id, key_id, scopes, created_at,
//	                             label, prefix, source, expires_at (ms, absent
//	                             = never), revoked_at (ms), last_used_at (ms),
//	                             kind ("claimed"; absent = api), held (ms, a
//	                             claimed key not approved yet, see held.go)}
//	tenant:<tenant_id>:apikeys   hash key_id -> sha256 hex of the key (live
//	                             keys only; a revoked key leaves it)
//
// A revoked key's hash stays, marked revoked_at, so that a late last-used
// write cannot bring it back and the hash of a key is never reused.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/idempotency"
	"github.com/certfleet/certfleet/internal/printable"
	"github.com/certfleet/certfleet/internal/quota"
)

// Bearer key format: BearerPrefix then GeneratedKeyLen base62 characters
// (190 random bits).
const (
	BearerPrefix = "ssa_"
	// shownPrefixLen is how much of a key List shows: "ssa_" and 4 more.
	shownPrefixLen = len(BearerPrefix) + 4
	// MaxLabelLen caps a key's label, in characters.
	MaxLabelLen = 100
	// lastUsedEvery is how often at most one replica writes a key's
	// last_used_at.
	lastUsedEvery = time.Minute
)

// Scopes.
const (
	ScopeRead  = "read"
	ScopeWrite = "write"
)

// SourceCLI is the Source of keys created by `certfleet apikey create`.
const SourceCLI = "cli"

// More errors a caller maps to HTTP statuses.
var (
	ErrUnknownKeyID = errors.New("API key not found")
	ErrBadLabel     = fmt.Errorf("label must be 1 to %d characters", MaxLabelLen)
	// ErrLabelControl is a label holding a control character
	// (printable.HasControl), which a terminal listing the keys would run.
	ErrLabelControl = errors.New("label must not contain control characters")
	ErrBadScopes    = errors.New(`permissions must be a non-empty subset of ["read","write"]`)
	ErrBadExpiry    = errors.New("expires_at must be in the future")
)

// Principal is who a request acts as: an account (tenant) through one key.
type Principal struct {
	TenantID string
	KeyID    string
	Scopes   []string
	// Held is a claimed key the account has not approved: it sees only the
	// domains it added itself (held.go).
	Held bool

	hash string // of the key, for KeyUsage
}

// Can tells whether the principal holds scope.
func (p Principal) Can(scope string) bool { return slices.Contains(p.Scopes, scope) }

// Key kinds.
const (
	// KindAPI is a v1 bearer key, created by the account or the operator.
	KindAPI = "api"
	// KindClaimed is a key handed out by the KeyChest claim calls, which
	// anyone who knows the account's email can make.
	KindClaimed = "claimed"
)

// APIKey is a key as listed: never the secret, only its first characters.
type APIKey struct {
	ID     string
	Label  string
	Prefix string
	Scopes []string
	Source string
	// Kind is KindAPI or KindClaimed.
	Kind string
	// Held is a claimed key not approved yet.
	Held       bool
	CreatedAt  time.Time
	ExpiresAt  *time.Time
	LastUsedAt *time.Time
}

// NewKey is a key just created: the secret is in Key, and nowhere else.
type NewKey struct {
	APIKey
	Key string
}

func apiKeysKey(tenantID string) string {
	return events.TenantNamespace(tenantID) + "apikeys"
}

// keyIdemKey is the tenant's record of the keys created with an
// Idempotency-Key: key id -> the request's fingerprint. It is never
// trimmed (a field per such key, revoked or not); Forget deletes it with
// the tenant's namespace.
func keyIdemKey(tenantID string) string { return apiKeysKey(tenantID) + ":idem" }

// KeyUsage writes keys' last_used_at without a write per request: at most
// once every lastUsedEvery per key from each process holding one, so every
// replica's list shows a time at most a minute (plus the lag of the
// busiest replica) old.
type KeyUsage struct {
	store   *Store
	mu      sync.Mutex
	written map[string]time.Time // key hash -> time of this process's last write
}

// NewKeyUsage returns a recorder of last-used times writing through s.
func (s *Store) NewKeyUsage() *KeyUsage {
	return &KeyUsage{store: s, written: make(map[string]time.Time)}
}

// Seen records that p's key was used now; it writes to Redis only when
// this process has not written the key's time within lastUsedEvery. A
// failed write is logged: it only delays last_used_at.
func (u *KeyUsage) Seen(ctx context.Context, p Principal) {
	now := u.store.cfg.Now()
	if p.hash == "" || !u.due(p.hash, now) {
		return
	}
	// The hash exists (revocation keeps it), so this never creates a record.
	if err := u.store.rdb.HSet(ctx, apiKeyKey(p.hash), "last_used_at", now.UnixMilli()).Err(); err != nil {
		u.store.logger.Warn("write last used time failed", zap.String("key_id", p.KeyID), zap.Error(err))
	}
}

// due tells whether hash's time should be written at now, and if so notes
// it as written. Entries older than lastUsedEvery are dropped once the map
// grows, so it holds about the keys used in the last minute.
func (u *KeyUsage) due(hash string, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if t, ok := u.written[hash]; ok && now.Sub(t) < lastUsedEvery && !now.Before(t) {
		return false
	}
	if len(u.written) >= 4096 {
		for h, t := range u.written {
			if now.Sub(t) >= lastUsedEvery {
				delete(u.written, h)
			}
		}
	}
	u.written[hash] = now
	return true
}

// AuthenticateBearer returns the principal of a bearer token, or
// ErrUnknownKey for every refusal: malformed, unknown, expired or revoked.
// Every refusal costs the same work (a hash and one HGETALL), so timing
// does not tell them apart; the lookup is by SHA-256, so it leaks nothing
// about other keys either.
//
// It does not record the use: see KeyUsage.
func (s *Store) AuthenticateBearer(ctx context.Context, token string) (Principal, error) {
	return s.authenticate(ctx, HashKey(token), strings.HasPrefix(token, BearerPrefix))
}

// AuthenticateHash is AuthenticateBearer for a key known by its hash
// (HashKey): a dashboard session keeps the hash, never the key, and
// checks it again on every request, so a revoked or expired key ends its
// sessions at once.
func (s *Store) AuthenticateHash(ctx context.Context, hash string) (Principal, error) {
	return s.authenticate(ctx, hash, true)
}

// authenticate looks hash up; wellFormed false refuses after the same work.
func (s *Store) authenticate(ctx context.Context, hash string, wellFormed bool) (Principal, error) {
	rec, err := s.rdb.HGetAll(ctx, apiKeyKey(hash)).Result()
	if err != nil {
		return Principal{}, fmt.Errorf("look up api key: %w", err)
	}
	now := s.cfg.Now()
	ok := wellFormed && rec["tenant_id"] != "" && rec["revoked_at"] == "" && rec["pending"] == ""
	if exp := rec["expires_at"]; exp != "" {
		ms, err := strconv.ParseInt(exp, 10, 64)
		ok = ok && err == nil && now.UnixMilli() < ms
	}
	if !ok {
		return Principal{}, ErrUnknownKey
	}
	return principalOf(hash, rec), nil
}

// principalOf is the principal of the key record rec of hash.
func principalOf(hash string, rec map[string]string) Principal {
	return Principal{TenantID: rec["tenant_id"], KeyID: rec["key_id"], Scopes: splitScopes(rec["scopes"]),
		Held: rec["held"] != "", hash: hash}
}

func splitScopes(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// ParseScopes checks requested scopes: a non-empty subset of read and
// write. It returns them in a fixed order without duplicates.
func ParseScopes(scopes []string) ([]string, error) {
	if len(scopes) == 0 {
		return nil, ErrBadScopes
	}
	var out []string
	for _, want := range []string{ScopeRead, ScopeWrite} {
		if slices.Contains(scopes, want) {
			out = append(out, want)
		}
	}
	for _, sc := range scopes {
		if sc != ScopeRead && sc != ScopeWrite {
			return nil, ErrBadScopes
		}
	}
	return out, nil
}

// ensureAccountScript creates an account unless it exists.
//
// KEYS: account:<tenant>, events stream.
// ARGV: email, now ms, maxlen, then the event's fields. Returns 1 when
// created.
var ensureAccountScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'email', ARGV[1], 'created_at', ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
return 1
`)

// EnsureAccount returns the account id of email, creating the account
// (and its account.created event) if needed: the operator's way in.
func (s *Store) EnsureAccount(ctx context.Context, email string) (string, error) {
	email, err := ParseEmail(email)
	if err != nil {
		return "", err
	}
	tenantID := events.TenantID(email)
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	ev, err := events.New(events.AccountCreated, tenantID, tenantID, events.AccountCreatedV1{Email: email})
	if err != nil {
		return "", err
	}
	ev.OccurredAt = now
	fields, err := ev.StreamFields()
	if err != nil {
		return "", err
	}
	args := append([]any{email, now.UnixMilli(), s.cfg.MaxLen}, fields...)
	n, err := s.commands.RunScript(ctx, ensureAccountScript, []string{accountKey(tenantID), events.EventStream(tenantID)}, args...).Int()
	if err != nil {
		return "", fmt.Errorf("ensure account %s: %w", tenantID, err)
	}
	if n == 1 {
		s.logger.Info("account created", zap.String("tenant_id", tenantID))
	}
	return tenantID, nil
}

// CreateKey creates a key for tenantID with the given label, scopes (see
// ParseScopes), optional expiry (must be in the future) and source, and
// returns it with its secret, which is not stored anywhere.
func (s *Store) CreateKey(ctx context.Context, tenantID, label string, scopes []string, expiresAt *time.Time, source string) (NewKey, error) {
	return s.CreateKeyOnce(ctx, idempotency.Request{}, tenantID, label, scopes, expiresAt, source)
}

// CreateKeyOnce is CreateKey for a request with an Idempotency-Key
// (idem; the zero Request for none): the key's id is the request's, and a
// retry after the first attempt created it returns *idempotency.SecretShown
// (its secret is gone with the first answer) or, for another request
// under the same Idempotency-Key, idempotency.ErrMismatch; also after the
// key was revoked (the tenant's idempotency record, keyIdemKey, outlives
// it), so a key id is never created twice.
func (s *Store) CreateKeyOnce(ctx context.Context, idem idempotency.Request, tenantID, label string, scopes []string, expiresAt *time.Time, source string) (NewKey, error) {
	if n := len([]rune(label)); n < 1 || n > MaxLabelLen || strings.TrimSpace(label) == "" {
		return NewKey{}, ErrBadLabel
	}
	if printable.HasControl(label) {
		return NewKey{}, ErrLabelControl
	}
	scopes, err := ParseScopes(scopes)
	if err != nil {
		return NewKey{}, err
	}
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	if expiresAt != nil {
		t := expiresAt.UTC().Truncate(time.Millisecond)
		if !t.After(now) {
			return NewKey{}, ErrBadExpiry
		}
		expiresAt = &t
	}
	// A collision of 190 random bits does not happen; the loop only turns
	// the impossible into an error instead of a shared key.
	for range 3 {
		secret, err := GenerateKey()
		if err != nil {
			return NewKey{}, err
		}
		key := BearerPrefix + secret
		id := uuid.NewString()
		if idem.Set() {
			id = idem.UUID()
		}
		nk := NewKey{Key: key, APIKey: APIKey{
			ID: id, Label: label, Prefix: key[:shownPrefixLen], Scopes: scopes,
			Source: source, Kind: KindAPI, CreatedAt: now, ExpiresAt: expiresAt,
		}}
		res, err := s.reserveAndCommit(ctx, tenantID, "", HashKey(key), nk.APIKey, idem.Fingerprint())
		if err != nil {
			return NewKey{}, err
		}
		switch res {
		case "replay":
			return NewKey{}, &idempotency.SecretShown{What: "API key", ID: id, Revoke: "DELETE /api/v1/api-keys/" + id}
		case "mismatch":
			return NewKey{}, idempotency.ErrMismatch
		case "created":
			s.logger.Info("api key created", zap.String("tenant_id", tenantID), zap.String("key_id", nk.ID),
				zap.Strings("scopes", scopes), zap.String("source", source))
			return nk, nil
		case "no-account":
			return NewKey{}, fmt.Errorf("create key for %s: %w", tenantID, ErrUnknownAccount)
		case "taken", "committed":
			continue
		default:
			return NewKey{}, fmt.Errorf("create key for %s: unexpected script result %q", tenantID, res)
		}
	}
	return NewKey{}, errors.New("generate key: three collisions in a row")
}

// ErrUnknownAccount is a key created for an account that does not exist.
var ErrUnknownAccount = errors.New("unknown account")

// reserveKeyScript claims apikey:<hash> for a tenant, marked pending until
// the tenant's commit is done.
//
// KEYS: apikey:<hash>.
// ARGV: tenant id, now ms, then the record's fields (HSET pairs).
// Returns {"reserved", key id} for a new reservation, {"pending", key id}
// for this tenant's reservation a crash left uncommitted, {"committed",
// key id} when the key is already this tenant's, {"taken"} when it is
// another tenant's.
var reserveKeyScript = redis.NewScript(`
local rec = redis.call('HMGET', KEYS[1], 'tenant_id', 'key_id', 'pending')
if rec[1] then
  if rec[1] ~= ARGV[1] then return {'taken'} end
  if rec[3] then return {'pending', rec[2]} end
  return {'committed', rec[2]}
end
redis.call('HSET', KEYS[1], 'pending', ARGV[2], unpack(ARGV, 3))
local id = redis.call('HGET', KEYS[1], 'key_id')
return {'reserved', id}
`)

// commitKeyScript lists a reserved key in its tenant and appends its
// event, creating the account first when an email is given, unless the
// tenant has its quota of keys. A held key (a claim, held.go) counts only
// against the tenant's held_api_keys quota and is listed in its held keys
// (heldKeysKey); every other key against api_keys, which counts the live
// keys that are not held. Running it again for the same key writes
// nothing.
//
// With an Idempotency-Key fingerprint, a key id the tenant's idempotency
// record (keyIdemKey: key id -> fingerprint, kept after a revocation)
// holds was created before: "replay" for the same fingerprint, else
// "mismatch"; a new key is recorded there.
//
// KEYS: tenant:<tenant>:apikeys, account:<tenant>, the tenant's event
// stream, the tenant's quota overrides, the idempotency record, the
// tenant's held keys.
// ARGV: maxlen, key id, hash, email ("" = the account must exist), now ms,
// default key quota, fingerprint ("" = none), "1" for a held key else "",
// default held key quota, the account event's field count and fields,
// then the key event's fields.
// Returns "created", "committed" (done before), "replay", "mismatch",
// "no-account" or "quota:<resource>:<limit>".
var commitKeyScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], ARGV[2]) == ARGV[3] then return 'committed' end
if ARGV[7] ~= '' then
  local was = redis.call('HGET', KEYS[5], ARGV[2])
  if was then
    -- Written again as it is, so that a replay's WAIT covers the first
    -- attempt's write (replication is in order).
    redis.call('HSET', KEYS[5], ARGV[2], was)
    if was == ARGV[7] then return 'replay' end
    return 'mismatch'
  end
end
local held = redis.call('SCARD', KEYS[6])
if ARGV[8] ~= '' then
  local limit = ` + quota.LuaLimit(4, 9, quota.HeldAPIKeys) + `
  if limit > 0 and held >= limit then return 'quota:` + string(quota.HeldAPIKeys) + `:' .. limit end
else
  local limit = ` + quota.LuaLimit(4, 6, quota.APIKeys) + `
  if limit > 0 and redis.call('HLEN', KEYS[1]) - held >= limit then return 'quota:` + string(quota.APIKeys) + `:' .. limit end
end
local na = tonumber(ARGV[10])
if redis.call('EXISTS', KEYS[2]) == 0 then
  if ARGV[4] == '' then return 'no-account' end
  redis.call('HSET', KEYS[2], 'email', ARGV[4], 'created_at', ARGV[5])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 11, 10 + na))
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
if ARGV[8] ~= '' then redis.call('SADD', KEYS[6], ARGV[2]) end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[5], ARGV[2], ARGV[7]) end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 11 + na))
return 'created'
`)

// releaseKeyScript drops a reservation that cannot be committed.
//
// KEYS: apikey:<hash>. ARGV: key id. Returns 1 when released.
var releaseKeyScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'key_id') ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[1], 'pending') == 0 then return 0 end
return redis.call('DEL', KEYS[1])
`)

// reserveAndCommit registers key k (its hash) for tenantID in the three
// steps of the package doc: reserve the hash in the deployment-wide index,
// commit the tenant's keys and events in the tenant's slot, then clear the
// reservation's pending mark. A non-empty email creates the account if
// needed. It returns "created", "committed" (the key was already the
// tenant's), "taken" or "no-account", and with an Idempotency-Key
// fingerprint (fp, "" for none) "replay" or "mismatch" (commitKeyScript).
func (s *Store) reserveAndCommit(ctx context.Context, tenantID, email, hash string, k APIKey, fp string) (string, error) {
	rec := []any{"tenant_id", tenantID, "key_id", k.ID, "scopes", strings.Join(k.Scopes, ","),
		"created_at", k.CreatedAt.UnixMilli(), "label", k.Label, "prefix", k.Prefix, "source", k.Source}
	if k.ExpiresAt != nil {
		rec = append(rec, "expires_at", k.ExpiresAt.UnixMilli())
	}
	if k.Kind == KindClaimed {
		rec = append(rec, "kind", KindClaimed)
	}
	if k.Held {
		rec = append(rec, "held", k.CreatedAt.UnixMilli())
	}
	res, err := s.commands.RunScript(ctx, reserveKeyScript, []string{apiKeyKey(hash)},
		append([]any{tenantID, k.CreatedAt.UnixMilli()}, rec...)...).StringSlice()
	if err != nil {
		return "", fmt.Errorf("reserve key: %w", err)
	}
	switch {
	case len(res) == 1 && res[0] == "taken":
		return "taken", nil
	case len(res) == 2 && res[0] == "committed":
		return "committed", nil
	case len(res) == 2 && (res[0] == "reserved" || res[0] == "pending"):
		// A pending reservation is this tenant's own unfinished claim:
		// complete it under the key id it was reserved with.
		k.ID = res[1]
	default:
		return "", fmt.Errorf("reserve key: unexpected script result %v", res)
	}
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	acc, err := events.New(events.AccountCreated, tenantID, tenantID, events.AccountCreatedV1{Email: email})
	if err != nil {
		return "", err
	}
	created := events.APIKeyCreatedV1{
		KeyID: k.ID, Hash: hash, Prefix: k.Prefix, Label: k.Label, Scopes: k.Scopes,
		Source: k.Source, ExpiresAt: k.ExpiresAt, Kind: k.Kind, Held: k.Held,
	}
	if k.Held {
		created.Email = email // only claims hold keys, and a claim names its account
	}
	kev, err := events.New(events.APIKeyCreated, tenantID, k.ID, created)
	if err != nil {
		return "", err
	}
	acc.OccurredAt, kev.OccurredAt = now, k.CreatedAt
	accFields, err := acc.StreamFields()
	if err != nil {
		return "", err
	}
	keyFields, err := kev.StreamFields()
	if err != nil {
		return "", err
	}
	heldArg := ""
	if k.Held {
		heldArg = "1"
	}
	args := []any{s.cfg.MaxLen, k.ID, hash, email, now.UnixMilli(), s.cfg.Quotas[quota.APIKeys], fp,
		heldArg, s.cfg.Quotas[quota.HeldAPIKeys], len(accFields)}
	args = append(append(args, accFields...), keyFields...)
	out, err := s.commands.RunScript(ctx, commitKeyScript,
		[]string{apiKeysKey(tenantID), accountKey(tenantID), events.EventStream(tenantID), quota.Key(tenantID),
			keyIdemKey(tenantID), heldKeysKey(tenantID)}, args...).Text()
	if err != nil {
		return "", fmt.Errorf("commit key: %w", err)
	}
	if ex := quota.ScriptExceeded(out, quota.APIKeys); ex != nil {
		if err := s.commands.RunScript(ctx, releaseKeyScript, []string{apiKeyKey(hash)}, k.ID).Err(); err != nil {
			return "", fmt.Errorf("release key: %w", err)
		}
		return "", ex
	}
	switch out {
	case "no-account", "replay", "mismatch":
		if err := s.commands.RunScript(ctx, releaseKeyScript, []string{apiKeyKey(hash)}, k.ID).Err(); err != nil {
			return "", fmt.Errorf("release key: %w", err)
		}
		return out, nil
	case "created", "committed":
		if _, err := s.commands.Pipelined(ctx, apiKeyKey(hash), func(p redis.Pipeliner) error {
			return p.HDel(ctx, apiKeyKey(hash), "pending").Err()
		}); err != nil {
			return "", fmt.Errorf("finish key: %w", err)
		}
		return out, nil
	default:
		return "", fmt.Errorf("commit key: unexpected script result %q", out)
	}
}

// ListKeys returns the live keys of tenantID, oldest first. Revoked keys
// are not listed; expired ones are, until revoked.
func (s *Store) ListKeys(ctx context.Context, tenantID string) ([]APIKey, error) {
	ids, err := s.rdb.HGetAll(ctx, apiKeysKey(tenantID)).Result()
	if err != nil {
		return nil, fmt.Errorf("list keys of %s: %w", tenantID, err)
	}
	cmds := make(map[string]*redis.MapStringStringCmd, len(ids))
	pipe := s.rdb.Pipeline()
	for id, hash := range ids {
		cmds[id] = pipe.HGetAll(ctx, apiKeyKey(hash))
	}
	if len(ids) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("list keys of %s: %w", tenantID, err)
		}
	}
	out := make([]APIKey, 0, len(ids))
	for id, cmd := range cmds {
		rec := cmd.Val()
		if rec["tenant_id"] != tenantID || rec["revoked_at"] != "" {
			continue
		}
		out = append(out, APIKey{
			ID:         id,
			Label:      rec["label"],
			Prefix:     rec["prefix"],
			Scopes:     splitScopes(rec["scopes"]),
			Source:     rec["source"],
			Kind:       kindOf(rec),
			Held:       rec["held"] != "",
			CreatedAt:  msTime(rec["created_at"]),
			ExpiresAt:  msTimePtr(rec["expires_at"]),
			LastUsedAt: msTimePtr(rec["last_used_at"]),
		})
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// kindOf is a key record's kind; records written before kinds existed
// are v1 keys unless the KeyChest claim made them.
func kindOf(rec map[string]string) string {
	if rec["kind"] == KindClaimed || rec["source"] == Source {
		return KindClaimed
	}
	return KindAPI
}

func msTime(s string) time.Time {
	ms, _ := strconv.ParseInt(s, 10, 64)
	return time.UnixMilli(ms).UTC()
}

func msTimePtr(s string) *time.Time {
	if s == "" {
		return nil
	}
	t := msTime(s)
	return &t
}

// revokeKeyScript unlists a live key of a tenant and appends its event;
// RevokeKey has marked the key's record revoked and removed the servers a
// held key added before. A held key leaves the tenant's held keys, which
// frees its room in held_api_keys, and its set of added servers goes.
//
// KEYS: tenant:<tenant>:apikeys, the tenant's event stream, the tenant's
// held keys, the key's held set.
// ARGV: key id, hash, maxlen, then the event's fields. Returns 1 when
// revoked, 0 when the tenant has no such live key with that hash.
var revokeKeyScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[4])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
return 1
`)

// RevokeKey revokes key id of tenantID at once on every replica. A key id
// of another tenant, or one already revoked, is ErrUnknownKeyID.
//
// Revoking a held key turns its claim down: the servers it added that are
// still held (not approved, not removed) are removed with it, so they
// stop taking room in held_domains and being scanned for nobody. They go
// after the key stops working and before it is unlisted, so a retry after
// a crash in between, which finds the key still listed, removes the rest.
func (s *Store) RevokeKey(ctx context.Context, tenantID, id string) error {
	_, err := s.revokeKey(ctx, tenantID, id)
	return err
}

// revokeKey is RevokeKey, returning the held servers it removed.
func (s *Store) revokeKey(ctx context.Context, tenantID, id string) ([]Domain, error) {
	if _, err := uuid.Parse(id); err != nil {
		return nil, ErrUnknownKeyID
	}
	// The script checks the index again, so a key revoked in between is
	// not revoked twice.
	hash, err := s.rdb.HGet(ctx, apiKeysKey(tenantID), id).Result()
	if errors.Is(err, redis.Nil) {
		return nil, ErrUnknownKeyID
	}
	if err != nil {
		return nil, fmt.Errorf("revoke key %s of %s: %w", id, tenantID, err)
	}
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	ev, err := events.New(events.APIKeyRevoked, tenantID, id, events.APIKeyRevokedV1{KeyID: id})
	if err != nil {
		return nil, err
	}
	ev.OccurredAt = now
	fields, err := ev.StreamFields()
	if err != nil {
		return nil, err
	}
	// The record in the deployment-wide index is marked first, so the key
	// stops working even if the process dies before the tenant's script:
	// a retry finds it still listed and finishes the revocation.
	if _, err := s.commands.Pipelined(ctx, apiKeyKey(hash), func(p redis.Pipeliner) error {
		return p.HSetNX(ctx, apiKeyKey(hash), "revoked_at", now.UnixMilli()).Err()
	}); err != nil {
		return nil, fmt.Errorf("revoke key %s of %s: %w", id, tenantID, err)
	}
	removed, err := s.removeHeldDomains(ctx, tenantID, id, hash)
	if err != nil {
		return removed, fmt.Errorf("revoke key %s of %s: %w", id, tenantID, err)
	}
	args := append([]any{id, hash, s.cfg.MaxLen}, fields...)
	n, err := s.commands.RunScript(ctx, revokeKeyScript, []string{apiKeysKey(tenantID), events.EventStream(tenantID),
		heldKeysKey(tenantID), heldDomainsKey(tenantID, id)}, args...).Int()
	if err != nil {
		return removed, fmt.Errorf("revoke key %s of %s: %w", id, tenantID, err)
	}
	if n == 0 {
		return removed, ErrUnknownKeyID
	}
	s.logger.Info("api key revoked", zap.String("tenant_id", tenantID), zap.String("key_id", id),
		zap.Int("held_domains_removed", len(removed)))
	return removed, nil
}

// removeHeldDomains removes the domains the held key id (record hash)
// added that it still holds, and returns them as they were. A key that is
// not held has none.
func (s *Store) removeHeldDomains(ctx context.Context, tenantID, id, hash string) ([]Domain, error) {
	held, err := s.rdb.HGet(ctx, apiKeyKey(hash), "held").Result()
	if errors.Is(err, redis.Nil) || held == "" {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	members, err := s.rdb.SMembers(ctx, heldDomainsKey(tenantID, id)).Result()
	if err != nil {
		return nil, err
	}
	var removed []Domain
	for _, domainID := range members {
		d, err := s.GetDomain(ctx, tenantID, domainID)
		if errors.Is(err, ErrUnknownDomain) {
			continue
		}
		if err != nil {
			return removed, err
		}
		if d.HeldBy != id {
			continue
		}
		gone, err := s.RemoveDomain(ctx, tenantID, domainID)
		if errors.Is(err, ErrUnknownDomain) {
			continue
		}
		if err != nil {
			return removed, err
		}
		removed = append(removed, gone)
	}
	return removed, nil
}

// ErrExpiry is an expiry time that is neither an RFC 3339 time nor a date.
var ErrExpiry = errors.New(`want an ISO 8601 time such as "2030-01-02T15:04:05Z", or a date such as "2030-01-02" (its start, UTC)`)

// ParseExpiry reads a key's expiry as the API and the CLI take it: an RFC
// 3339 time, or a date alone (ISO 8601 too, as SSLTrackr's expires_at
// allows), which means the start of that day in UTC.
func ParseExpiry(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, ErrExpiry
}
