// Package accounts is the command side of certfleet's KeyChest-compatible
// accounts: an account is an email address, API keys belong to exactly one
// account, and an account registers domains. Each command checks its
// invariant and appends its events to the events stream in one Lua script,
// so two API servers can never hand one key to two accounts nor add one
// domain twice, and the request can read its own write at once.
//
// Redis layout (owned by this package):
//
//	apikey:<sha256 hex of key>   hash {tenant_id, key_id, scopes, created_at}
//	account:<tenant_id>          hash {email, created_at}
//	tenant:<tenant_id>:domains   hash "host:port" -> domain_id (domains.go)
//	domain:<domain_id>           hash, see domains.go
//
// Keys themselves are never stored, only their SHA-256.
package accounts

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
)

// Source is the Source of the events this package writes: they come from the
// KeyChest-compatible API.
const Source = "keychest"

// Key formats. A client-chosen key follows KeyChest's rule; a generated one
// is longer than the minimum and uses the same alphabet minus "-".
const (
	MinKeyLen       = 16
	MaxKeyLen       = 64
	GeneratedKeyLen = 32
	maxEmailLen     = 254
	keyAlphabet     = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
)

// Errors a caller maps to HTTP statuses.
var (
	ErrBadEmail      = errors.New("invalid email address")
	ErrBadKey        = fmt.Errorf("invalid api_key: it must be %d to %d characters of a-z, A-Z, 0-9 and -", MinKeyLen, MaxKeyLen)
	ErrKeyTaken      = errors.New("api_key is already registered to another account; choose another key")
	ErrUnknownKey    = errors.New("unknown api_key")
	ErrUnknownDomain = errors.New("domain not registered for this api_key")
)

// Scopes of a KeyChest key: KeyChest keys both add domains and read them.
var keychestScopes = []string{"read", "write"}

// Config configures the store.
type Config struct {
	// MaxLen caps the events stream (XADD MAXLEN ~). Default events.DefaultMaxLen.
	MaxLen int64
	// Now is the clock of created_at fields and events. Default time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.MaxLen == 0 {
		c.MaxLen = events.DefaultMaxLen
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports every problem of the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.MaxLen < 0 {
		errs = append(errs, fmt.Errorf("max len must not be negative, got %d", c.MaxLen))
	}
	return errors.Join(errs...)
}

// Store executes account commands against Redis.
type Store struct {
	cfg    Config
	rdb    redis.UniversalClient
	logger *zap.Logger
}

// New returns a store writing through rdb.
func New(cfg Config, rdb redis.UniversalClient, logger *zap.Logger) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("accounts config: %w", err)
	}
	if rdb == nil {
		return nil, errors.New("accounts: redis client is nil")
	}
	return &Store{cfg: cfg, rdb: rdb, logger: logger.Named("accounts")}, nil
}

// Key names.
func apiKeyKey(hash string) string      { return "apikey:" + hash }
func accountKey(tenantID string) string { return "account:" + tenantID }

// Email returns the email of the account tenantID, or "" when there is no
// such account.
func (s *Store) Email(ctx context.Context, tenantID string) (string, error) {
	email, err := s.rdb.HGet(ctx, accountKey(tenantID), "email").Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read account %s: %w", tenantID, err)
	}
	return email, nil
}
func domainsKey(tenantID string) string { return "tenant:" + tenantID + ":domains" }
func domainKey(domainID string) string  { return "domain:" + domainID }

// HashKey is how a key is stored and appears in events: SHA-256, hex.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// ParseEmail checks an account's email: a bare address (no display name,
// no angle brackets) of at most 254 characters. It returns it as given;
// the account id ignores case.
func ParseEmail(s string) (string, error) {
	if s == "" || len(s) > maxEmailLen {
		return "", fmt.Errorf("%w: it must be 1 to %d characters", ErrBadEmail, maxEmailLen)
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s {
		return "", fmt.Errorf("%w: send a bare address such as ops@example.com", ErrBadEmail)
	}
	return s, nil
}

// CheckKey tells whether s has the form of a KeyChest API key.
func CheckKey(s string) error {
	if len(s) < MinKeyLen || len(s) > MaxKeyLen {
		return ErrBadKey
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return ErrBadKey
		}
	}
	return nil
}

// GenerateKey returns a fresh random key of GeneratedKeyLen characters.
func GenerateKey() (string, error) {
	// Rejection sampling keeps every character equally likely: 248 is the
	// largest multiple of 62 below 256.
	out := make([]byte, 0, GeneratedKeyLen)
	buf := make([]byte, 2*GeneratedKeyLen)
	for len(out) < GeneratedKeyLen {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("generate key: %w", err)
		}
		for _, b := range buf {
			if b < 248 && len(out) < GeneratedKeyLen {
				out = append(out, keyAlphabet[int(b)%len(keyAlphabet)])
			}
		}
	}
	return string(out), nil
}

// claimScript registers a key for an account unless the key is taken.
// A new account's account.created event is appended first, so the
// apikey.created event never refers to an account nobody created.
//
// KEYS: apikey:<hash>, account:<tenant>, events stream.
// ARGV: tenant id, email, key id, scopes, now ms, maxlen, then the account
// event's field count and fields, then the key event's (StreamFields).
// Returns "created", "success" (the key is already this account's) or
// "taken" (it is another account's).
var claimScript = redis.NewScript(`
local owner = redis.call('HGET', KEYS[1], 'tenant_id')
if owner then
  if owner == ARGV[1] then return 'success' end
  return 'taken'
end
local na = tonumber(ARGV[7])
local nk = tonumber(ARGV[8 + na])
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('HSET', KEYS[2], 'email', ARGV[2], 'created_at', ARGV[5])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', unpack(ARGV, 8, 7 + na))
end
redis.call('HSET', KEYS[1], 'tenant_id', ARGV[1], 'key_id', ARGV[3], 'scopes', ARGV[4], 'created_at', ARGV[5])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', unpack(ARGV, 9 + na, 8 + na + nk))
return 'created'
`)

// Claim registers key for the account of email. It returns created=true
// for a new key, false when the key already belongs to this account, and
// ErrKeyTaken when it belongs to another one: a key is never reassigned,
// and the answer does not tell whose it is.
func (s *Store) Claim(ctx context.Context, email, key string) (created bool, err error) {
	if email, err = ParseEmail(email); err != nil {
		return false, err
	}
	if err := CheckKey(key); err != nil {
		return false, err
	}
	tenantID := events.TenantID(email)
	hash := HashKey(key)
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)

	acc, err := events.New(events.AccountCreated, tenantID, tenantID, events.AccountCreatedV1{Email: email})
	if err != nil {
		return false, err
	}
	keyID := uuid.NewString()
	kev, err := events.New(events.APIKeyCreated, tenantID, keyID, events.APIKeyCreatedV1{
		KeyID:  keyID,
		Hash:   hash,
		Prefix: key[:4],
		Label:  Source,
		Scopes: keychestScopes,
		Source: Source,
	})
	if err != nil {
		return false, err
	}
	acc.OccurredAt, kev.OccurredAt = now, now
	accFields, err := acc.StreamFields()
	if err != nil {
		return false, err
	}
	keyFields, err := kev.StreamFields()
	if err != nil {
		return false, err
	}
	args := []any{tenantID, email, keyID, strings.Join(keychestScopes, ","), now.UnixMilli(), s.cfg.MaxLen}
	args = append(append(args, len(accFields)), accFields...)
	args = append(append(args, len(keyFields)), keyFields...)
	res, err := claimScript.Run(ctx, s.rdb,
		[]string{apiKeyKey(hash), accountKey(tenantID), events.StreamEvents}, args...).Text()
	if err != nil {
		return false, fmt.Errorf("claim key for %s: %w", tenantID, err)
	}
	switch res {
	case "created":
		s.logger.Info("api key created", zap.String("tenant_id", tenantID), zap.String("key_id", keyID))
		return true, nil
	case "success":
		return false, nil
	case "taken":
		s.logger.Warn("api key claim refused: key belongs to another account", zap.String("tenant_id", tenantID))
		return false, ErrKeyTaken
	default:
		return false, fmt.Errorf("claim key for %s: unexpected script result %q", tenantID, res)
	}
}

// ClaimNew generates a key and registers it for the account of email.
func (s *Store) ClaimNew(ctx context.Context, email string) (string, error) {
	if _, err := ParseEmail(email); err != nil {
		return "", err
	}
	// A collision of 190 random bits does not happen; the loop only turns
	// the impossible into an error instead of a reassigned key.
	for range 3 {
		key, err := GenerateKey()
		if err != nil {
			return "", err
		}
		created, err := s.Claim(ctx, email, key)
		if errors.Is(err, ErrKeyTaken) || (err == nil && !created) {
			continue
		}
		if err != nil {
			return "", err
		}
		return key, nil
	}
	return "", errors.New("generate key: three collisions in a row")
}

// Authenticate returns the account id that key belongs to, or
// ErrUnknownKey (also for a key of the wrong form, which cannot exist).
func (s *Store) Authenticate(ctx context.Context, key string) (string, error) {
	if CheckKey(key) != nil {
		return "", ErrUnknownKey
	}
	tenantID, err := s.rdb.HGet(ctx, apiKeyKey(HashKey(key)), "tenant_id").Result()
	if errors.Is(err, redis.Nil) {
		return "", ErrUnknownKey
	}
	if err != nil {
		return "", fmt.Errorf("look up api key: %w", err)
	}
	return tenantID, nil
}
