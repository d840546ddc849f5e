package notifier

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/seal"
)

// Limits of a channel.
const (
	MaxChannelsPerTenant = 50
	MaxNameLen           = 100
	MaxURLLen            = 2048
	MinSecretLen         = 16
	MaxSecretLen         = 256
	MaxRecipients        = 20
)

var (
	// ErrNotFound is returned for a channel that does not exist or belongs
	// to another tenant.
	ErrNotFound = errors.New("channel not found")
	// ErrNoPassphrase is returned when a channel with a secret is written
	// or delivered but no secrets passphrase is configured.
	ErrNoPassphrase = errors.New("webhook secrets are disabled: the server has no secrets passphrase (--secrets-passphrase)")
	// ErrTooMany is returned when a tenant already has MaxChannelsPerTenant.
	ErrTooMany = fmt.Errorf("a tenant may have at most %d channels", MaxChannelsPerTenant)
)

// InvalidError is a channel the request describes wrongly; its message
// names the field.
type InvalidError struct{ msg string }

func (e *InvalidError) Error() string { return e.msg }

func invalid(format string, args ...any) error {
	return &InvalidError{msg: fmt.Sprintf(format, args...)}
}

// Key names.
func channelKey(id string) string            { return "notify:channel:" + id }
func tenantChannelsKey(tenant string) string { return "notify:tenant:" + tenant + ":channels" }
func attemptsKey(channelID string) string    { return "notify:channel:" + channelID + ":attempts" }
func deliveryKey(id string) string           { return "notify:delivery:" + id }
func alertKey(alertID string) string         { return "notify:alert:" + alertID }
func secretAAD(channelID string) []byte      { return []byte("notify:channel:" + channelID + ":secret") }

const (
	// dueKey is the sorted set of delivery ids by when they are due (unix
	// ms); a claimed delivery's score is its lease's end.
	dueKey = "notify:due"
	// saltKey holds the scrypt salt of the secrets key, created once.
	saltKey = "notify:seal:salt"
)

// ChannelInput is what a client sends to create or replace a channel.
type ChannelInput struct {
	Type        string
	Name        string
	URL         string
	MinSeverity string
	Digest      bool
	To          []string
	// Secret: nil keeps the current secret (on update), "" removes it, any
	// other value replaces it.
	Secret *string
}

// StoreConfig configures a Store.
type StoreConfig struct {
	// Passphrase derives the key sealing webhook secrets; empty refuses
	// channels with a secret (ErrNoPassphrase).
	Passphrase string
	// MaxLen caps the events stream (XADD MAXLEN ~). Default
	// events.DefaultMaxLen.
	MaxLen int64
	// AttemptsKept is how many attempts are kept per channel. Default 200.
	AttemptsKept int
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (c *StoreConfig) setDefaults() {
	if c.MaxLen == 0 {
		c.MaxLen = events.DefaultMaxLen
	}
	if c.AttemptsKept == 0 {
		c.AttemptsKept = 200
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports every problem of the configuration.
func (c *StoreConfig) Validate() error {
	var errs []error
	if c.Passphrase != "" && len(c.Passphrase) < seal.MinPassphrase {
		errs = append(errs, fmt.Errorf("secrets passphrase must be at least %d characters", seal.MinPassphrase))
	}
	if c.MaxLen < 1 || c.AttemptsKept < 1 {
		errs = append(errs, errors.New("max len and attempts kept must be positive"))
	}
	return errors.Join(errs...)
}

// Store keeps the channels and the delivery queue in Redis. The apiserver
// and the notifier each have one; they share everything through Redis.
type Store struct {
	cfg    StoreConfig
	rdb    redis.UniversalClient
	logger *zap.Logger

	keys *seal.Keyring // seals webhook secrets
}

// NewStore returns a store on rdb.
func NewStore(cfg StoreConfig, rdb redis.UniversalClient, logger *zap.Logger) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("notifier store config: %w", err)
	}
	return &Store{cfg: cfg, rdb: rdb, logger: logger.Named("channels"),
		keys: seal.NewKeyring(cfg.Passphrase, rdb, saltKey)}, nil
}

// SecretsEnabled tells whether channels may carry a secret.
func (s *Store) SecretsEnabled() bool { return s.cfg.Passphrase != "" }

// sealBox returns the box sealing secrets (the keyring derives it once).
func (s *Store) sealBox(ctx context.Context) (*seal.Box, error) {
	if s.cfg.Passphrase == "" {
		return nil, ErrNoPassphrase
	}
	box, err := s.keys.Box(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", "secrets passphrase", err)
	}
	return box, nil
}

// OpenSecret returns ch with its Secret opened (unchanged when it has none).
func (s *Store) OpenSecret(ctx context.Context, ch Channel) (Channel, error) {
	if ch.SealedSecret == "" {
		return ch, nil
	}
	box, err := s.sealBox(ctx)
	if err != nil {
		return ch, err
	}
	plain, err := box.Open(ch.SealedSecret, secretAAD(ch.ID))
	if err != nil {
		return ch, fmt.Errorf("open secret of channel %s: %w", ch.ID, err)
	}
	ch.Secret = string(plain)
	return ch, nil
}

// normalize checks in and returns the channel it describes (without id,
// tenant, secret and times).
func normalize(in ChannelInput) (Channel, error) {
	ch := Channel{Type: in.Type, Name: strings.TrimSpace(in.Name), MinSeverity: in.MinSeverity, Digest: in.Digest}
	switch in.Type {
	case TypeWebhook, TypeSlack, TypeEmail:
	case "":
		return ch, invalid(`field "type" is required: webhook, slack or email`)
	default:
		return ch, invalid(`field "type" must be webhook, slack or email, got %q`, in.Type)
	}
	if ch.Name == "" {
		ch.Name = in.Type
	}
	if utf8.RuneCountInString(ch.Name) > MaxNameLen || strings.ContainsFunc(ch.Name, isControl) {
		return ch, invalid(`field "name" must be at most %d printable characters`, MaxNameLen)
	}
	if ch.MinSeverity == "" {
		ch.MinSeverity = SeverityInfo
	}
	if !ValidSeverity(ch.MinSeverity) {
		return ch, invalid(`field "min_severity" must be info, warning or critical, got %q`, in.MinSeverity)
	}
	switch in.Type {
	case TypeWebhook, TypeSlack:
		if err := checkURL(in.URL); err != nil {
			return ch, err
		}
		ch.URL = in.URL
		if len(in.To) > 0 {
			return ch, invalid(`field "to" is for email channels only`)
		}
		if in.Type == TypeSlack && in.Secret != nil && *in.Secret != "" {
			return ch, invalid(`field "secret" is for webhook channels only (a Slack URL is its own secret)`)
		}
	case TypeEmail:
		if in.URL != "" {
			return ch, invalid(`field "url" is for webhook and slack channels only`)
		}
		if in.Secret != nil && *in.Secret != "" {
			return ch, invalid(`field "secret" is for webhook channels only`)
		}
		if len(in.To) < 1 || len(in.To) > MaxRecipients {
			return ch, invalid(`field "to" must list 1 to %d email addresses, got %d`, MaxRecipients, len(in.To))
		}
		seen := make(map[string]bool, len(in.To))
		for _, a := range in.To {
			addr, err := mail.ParseAddress(a)
			if err != nil || addr.Address != strings.TrimSpace(a) || strings.ContainsAny(a, "\r\n") {
				return ch, invalid(`field "to": %q is not a bare email address (name@example.com)`, a)
			}
			lower := strings.ToLower(addr.Address)
			if seen[lower] {
				return ch, invalid(`field "to": %q is listed twice`, a)
			}
			seen[lower] = true
			ch.To = append(ch.To, addr.Address)
		}
	}
	if in.Secret != nil && *in.Secret != "" {
		n := len(*in.Secret)
		if n < MinSecretLen || n > MaxSecretLen || strings.ContainsFunc(*in.Secret, isControl) {
			return ch, invalid(`field "secret" must be %d to %d printable characters`, MinSecretLen, MaxSecretLen)
		}
	}
	return ch, nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// checkURL accepts absolute http and https URLs with a host. Which
// addresses the host may resolve to is the guard's business at send time:
// a name's answers change, so a check here would prove nothing.
func checkURL(raw string) error {
	if raw == "" {
		return invalid(`field "url" is required`)
	}
	if len(raw) > MaxURLLen {
		return invalid(`field "url" must be at most %d characters`, MaxURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Hostname() == "" {
		return invalid(`field "url" must be an absolute http or https URL, got %q`, raw)
	}
	if u.User != nil {
		return invalid(`field "url" must not carry credentials (user:password@)`)
	}
	if u.Fragment != "" || strings.ContainsFunc(raw, isControl) {
		return invalid(`field "url" must not have a fragment or control characters`)
	}
	return nil
}

// newChannelID returns "ch_" and 20 random hex digits.
func newChannelID() (string, error) {
	b := make([]byte, 10)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("new channel id: %w", err)
	}
	return "ch_" + hex.EncodeToString(b), nil
}

func channelEvent(name string, ch Channel) (events.Envelope, error) {
	var payload any = events.ChannelV1{
		ChannelID: ch.ID, Type: ch.Type, Name: ch.Name, MinSeverity: ch.MinSeverity, Digest: ch.Digest,
		URL: redactURL(ch.URL), SecretSet: ch.SealedSecret != "", To: ch.To,
	}
	if name == events.ChannelDeleted {
		payload = events.ChannelDeletedV1{ChannelID: ch.ID}
	}
	return events.New(name, ch.TenantID, ch.ID, payload)
}

// redactURL keeps a URL's scheme, host and the first path segment: a Slack
// incoming-webhook URL's path is its secret, and events live for ever.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || raw == "" {
		return ""
	}
	path := u.Path
	if len(path) > 1 {
		if i := strings.IndexByte(path[1:], '/'); i >= 0 {
			path = path[:i+1] + "/..."
		}
	}
	return u.Scheme + "://" + u.Host + path
}

// putScript writes a channel and its event in one step. KEYS: channel,
// tenant index, events stream. ARGV: mode ("create" or "update"), tenant,
// channel id, channel JSON, created ms, max channels, maxlen, then the
// event's fields.
// An update checks the channel exists and is the tenant's; a create checks
// the tenant's count.
var putScript = redis.NewScript(`
if ARGV[1] == 'create' then
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[6]) then return 'too_many' end
  if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[3])
else
  local cur = redis.call('GET', KEYS[1])
  if not cur or cjson.decode(cur)['tenant_id'] ~= ARGV[2] then return 'not_found' end
end
redis.call('SET', KEYS[1], ARGV[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', unpack(ARGV, 8))
return 'ok'
`)

// deleteScript removes a channel of the tenant and records the event.
// KEYS: channel, tenant index, events stream, attempts list. ARGV: tenant,
// channel id, maxlen, then the event's fields.
var deleteScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if not cur or cjson.decode(cur)['tenant_id'] ~= ARGV[1] then return 'not_found' end
redis.call('DEL', KEYS[1], KEYS[4])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
return 'ok'
`)

// Create stores a new channel of tenant.
func (s *Store) Create(ctx context.Context, tenant string, in ChannelInput) (Channel, error) {
	ch, err := normalize(in)
	if err != nil {
		return Channel{}, err
	}
	if ch.ID, err = newChannelID(); err != nil {
		return Channel{}, err
	}
	ch.TenantID = tenant
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	ch.CreatedAt, ch.UpdatedAt = now, now
	if in.Secret != nil && *in.Secret != "" {
		if err := s.sealSecret(ctx, &ch, *in.Secret); err != nil {
			return Channel{}, err
		}
	}
	if err := s.put(ctx, "create", events.ChannelCreated, ch); err != nil {
		return Channel{}, err
	}
	s.logger.Info("channel created", zap.String("tenant_id", tenant), zap.String("channel_id", ch.ID), zap.String("type", ch.Type))
	return ch, nil
}

// Update replaces the channel id of tenant by in. The type cannot change.
func (s *Store) Update(ctx context.Context, tenant, id string, in ChannelInput) (Channel, error) {
	cur, err := s.Get(ctx, tenant, id)
	if err != nil {
		return Channel{}, err
	}
	if in.Type == "" {
		in.Type = cur.Type
	}
	if in.Type != cur.Type {
		return Channel{}, invalid(`field "type" cannot change (the channel is a %s channel); create a new channel`, cur.Type)
	}
	ch, err := normalize(in)
	if err != nil {
		return Channel{}, err
	}
	ch.ID, ch.TenantID, ch.CreatedAt = cur.ID, cur.TenantID, cur.CreatedAt
	ch.UpdatedAt = s.cfg.Now().UTC().Truncate(time.Millisecond)
	switch {
	case in.Secret == nil && ch.Type == TypeWebhook:
		ch.SealedSecret = cur.SealedSecret
	case in.Secret != nil && *in.Secret != "":
		if err := s.sealSecret(ctx, &ch, *in.Secret); err != nil {
			return Channel{}, err
		}
	}
	if err := s.put(ctx, "update", events.ChannelUpdated, ch); err != nil {
		return Channel{}, err
	}
	return ch, nil
}

func (s *Store) sealSecret(ctx context.Context, ch *Channel, secret string) error {
	box, err := s.sealBox(ctx)
	if err != nil {
		return err
	}
	sealed, err := box.Seal([]byte(secret), secretAAD(ch.ID))
	if err != nil {
		return err
	}
	ch.SealedSecret = sealed
	return nil
}

func (s *Store) put(ctx context.Context, mode, eventName string, ch Channel) error {
	body, err := json.Marshal(ch)
	if err != nil {
		return fmt.Errorf("encode channel: %w", err)
	}
	ev, err := channelEvent(eventName, ch)
	if err != nil {
		return err
	}
	fields, err := ev.StreamFields()
	if err != nil {
		return err
	}
	args := append([]any{mode, ch.TenantID, ch.ID, string(body), ch.CreatedAt.UnixMilli(), MaxChannelsPerTenant, s.cfg.MaxLen}, fields...)
	res, err := putScript.Run(ctx, s.rdb, []string{channelKey(ch.ID), tenantChannelsKey(ch.TenantID), events.StreamEvents}, args...).Text()
	if err != nil {
		return fmt.Errorf("%s channel %s: %w", mode, ch.ID, err)
	}
	switch res {
	case "ok":
		return nil
	case "too_many":
		return ErrTooMany
	case "not_found":
		return ErrNotFound
	default:
		return fmt.Errorf("%s channel %s: unexpected script result %q", mode, ch.ID, res)
	}
}

// Delete removes the channel id of tenant. Its pending deliveries give up
// when a worker finds the channel gone.
func (s *Store) Delete(ctx context.Context, tenant, id string) error {
	ev, err := channelEvent(events.ChannelDeleted, Channel{ID: id, TenantID: tenant})
	if err != nil {
		return err
	}
	fields, err := ev.StreamFields()
	if err != nil {
		return err
	}
	args := append([]any{tenant, id, s.cfg.MaxLen}, fields...)
	res, err := deleteScript.Run(ctx, s.rdb,
		[]string{channelKey(id), tenantChannelsKey(tenant), events.StreamEvents, attemptsKey(id)}, args...).Text()
	if err != nil {
		return fmt.Errorf("delete channel %s: %w", id, err)
	}
	if res != "ok" {
		return ErrNotFound
	}
	return nil
}

// Get returns the channel id of tenant, or ErrNotFound.
func (s *Store) Get(ctx context.Context, tenant, id string) (Channel, error) {
	ch, err := s.channel(ctx, id)
	if err != nil {
		return Channel{}, err
	}
	if ch.TenantID != tenant {
		return Channel{}, ErrNotFound
	}
	return ch, nil
}

// channel reads a channel whatever its tenant.
func (s *Store) channel(ctx context.Context, id string) (Channel, error) {
	if !validID(id) {
		return Channel{}, ErrNotFound
	}
	raw, err := s.rdb.Get(ctx, channelKey(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Channel{}, ErrNotFound
	}
	if err != nil {
		return Channel{}, fmt.Errorf("read channel %s: %w", id, err)
	}
	var ch Channel
	if err := json.Unmarshal(raw, &ch); err != nil {
		return Channel{}, fmt.Errorf("decode channel %s: %w", id, err)
	}
	return ch, nil
}

// validID tells whether id has the form of a channel id, so that no
// client-chosen text becomes part of a key.
func validID(id string) bool {
	if len(id) != 23 || !strings.HasPrefix(id, "ch_") {
		return false
	}
	_, err := hex.DecodeString(id[3:])
	return err == nil && strings.ToLower(id) == id
}

// List returns the tenant's channels, oldest first.
func (s *Store) List(ctx context.Context, tenant string) ([]Channel, error) {
	ids, err := s.rdb.ZRange(ctx, tenantChannelsKey(tenant), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("list channels of %s: %w", tenant, err)
	}
	if len(ids) == 0 {
		return []Channel{}, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = channelKey(id)
	}
	vals, err := s.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("read channels of %s: %w", tenant, err)
	}
	out := make([]Channel, 0, len(vals))
	for i, v := range vals {
		raw, ok := v.(string)
		if !ok {
			continue // deleted between the two reads
		}
		var ch Channel
		if err := json.Unmarshal([]byte(raw), &ch); err != nil {
			return nil, fmt.Errorf("decode channel %s: %w", ids[i], err)
		}
		out = append(out, ch)
	}
	return out, nil
}

// Passphrase returns the secrets passphrase: pass itself, or else the first
// line of file (--secrets-passphrase-file), or "" when neither is given.
func Passphrase(pass, file string) (string, error) {
	if pass != "" || file == "" {
		return pass, nil
	}
	pass, err := seal.ReadPassphraseFile(file)
	if err != nil {
		return "", fmt.Errorf("secrets passphrase: %w", err)
	}
	return pass, nil
}
