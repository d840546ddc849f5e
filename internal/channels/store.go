package channels

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/guard"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/replicated"
	"github.com/certfleet/certfleet/internal/seal"
)

// Config configures a Store.
type Config struct {
	// Passphrase derives the key sealing webhook secrets; empty refuses
	// channels with a secret (ErrNoPassphrase).
	Passphrase string
	// MaxLen caps the events stream (XADD MAXLEN ~). Default
	// events.DefaultMaxLen.
	MaxLen int64
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Targets is the policy of notification endpoints
	// (--allow-webhook-targets): a webhook or Slack URL whose host is an
	// IP literal it refuses is refused when the channel is written. Names
	// are judged by their addresses when a delivery dials them.
	Targets guard.Policy
	// Quotas are the operator's default limits per tenant (channels is the
	// one this store counts); a tenant's overrides win. Default
	// quota.Defaults.
	Quotas quota.Limits
	// Wait is how many replicas must hold a channel's creation, update,
	// deletion or test request (and the secrets salt) before it is
	// answered (--redis-wait-replicas); one not confirmed in time fails
	// with replicated.ErrNotReplicated (the API answers 503). Default: no
	// wait.
	Wait replicated.Config
}

func (c *Config) setDefaults() {
	if c.MaxLen == 0 {
		c.MaxLen = events.DefaultMaxLen
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Quotas = c.Quotas.With(quota.Defaults)
}

// Validate reports every problem of the configuration.
func (c *Config) Validate() error {
	var errs []error
	if err := seal.CheckPassphrase("secrets", c.Passphrase); err != nil {
		errs = append(errs, err)
	}
	if c.MaxLen < 1 {
		errs = append(errs, errors.New("max len must be positive"))
	}
	if err := c.Quotas.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Wait.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Store keeps the channels in Redis. The apiserver and the notifier each
// have one; they share everything through Redis.
type Store struct {
	cfg    Config
	rdb    redis.UniversalClient
	logger *zap.Logger
	// commands runs the commands' scripts, waiting for replicas.
	commands *replicated.Writer

	keys *seal.Keyring // seals webhook secrets
}

// New returns a store on rdb.
func New(cfg Config, rdb redis.UniversalClient, logger *zap.Logger) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("channel store config: %w", err)
	}
	if rdb == nil {
		return nil, errors.New("channel store: redis client is required")
	}
	commands, err := replicated.New(cfg.Wait, rdb)
	if err != nil {
		return nil, fmt.Errorf("channel store: %w", err)
	}
	return &Store{cfg: cfg, rdb: rdb, logger: logger.Named("channels"), commands: commands,
		keys: seal.NewKeyring(cfg.Passphrase, rdb, saltKey, commands)}, nil
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
		URL: RedactURL(ch.URL), SecretSet: ch.SealedSecret != "", To: ch.To,
	}
	if name == events.ChannelDeleted {
		payload = events.ChannelDeletedV1{ChannelID: ch.ID}
	}
	return events.New(name, ch.TenantID, ch.ID, payload)
}

// putScript writes a channel and its event in one step. KEYS: channel,
// tenant index, events stream, the tenant's quota overrides. ARGV: mode
// ("create" or "update"), tenant, channel id, channel JSON, created ms,
// default channel quota, maxlen, then the event's fields.
// An update checks the channel exists and is the tenant's; a create checks
// the id is new ("exists": errExists) and the tenant's count against its
// quota.
var putScript = redis.NewScript(`
if ARGV[1] == 'create' then
  local limit = ` + quota.LuaLimit(4, 6, quota.Channels) + `
  if redis.call('EXISTS', KEYS[1]) == 1 then
    -- Written again as it is, so that a replay's WAIT covers the first
    -- attempt's write (replication is in order).
    redis.call('SET', KEYS[1], redis.call('GET', KEYS[1]))
    return 'exists'
  end
  if limit > 0 and redis.call('ZCARD', KEYS[2]) >= limit then return 'quota:' .. limit end
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

// requestScript records a request about a channel of the tenant (a test
// message, a confirmation mail sent again). KEYS:
// channel, events stream. ARGV: tenant, maxlen, then the event's fields.
var requestScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if not cur or cjson.decode(cur)['tenant_id'] ~= ARGV[1] then return 'not_found' end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
return 'ok'
`)

// normalize checks in as the package's normalize does, and refuses a URL
// naming an address the notifier would refuse to dial.
func (s *Store) normalize(in ChannelInput) (Channel, error) {
	ch, err := normalize(in)
	if err != nil || ch.URL == "" {
		return ch, err
	}
	u, err := url.Parse(ch.URL)
	if err != nil {
		return ch, invalid(`field "url" is not a URL`)
	}
	if err := s.cfg.Targets.CheckHost(u.Hostname()); err != nil {
		return ch, invalid(`field "url": %v; notifications may not be sent there (an operator can allow a range with --allow-webhook-targets)`, err)
	}
	return ch, nil
}

// Create stores a new channel of tenant.
func (s *Store) Create(ctx context.Context, tenant string, in ChannelInput) (Channel, error) {
	ch, err := s.normalize(in)
	if err != nil {
		return Channel{}, err
	}
	if in.Idempotency.Set() {
		ch.ID, ch.Idem = in.Idempotency.ID("ch_", 10), in.Idempotency.Fingerprint()
	} else if ch.ID, err = newChannelID(); err != nil {
		return Channel{}, err
	}
	ch.TenantID, ch.Confirm = tenant, ch.Type == TypeEmail
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	ch.CreatedAt, ch.UpdatedAt = now, now
	if in.Secret != nil && *in.Secret != "" {
		if err := s.sealSecret(ctx, &ch, *in.Secret); err != nil {
			return Channel{}, err
		}
	}
	if err := s.put(ctx, "create", events.ChannelCreated, ch); errors.Is(err, errExists) && in.Idempotency.Set() {
		// An earlier attempt of this request made it (the id is the
		// key's): answer as that attempt would have.
		cur, err := s.Get(ctx, tenant, ch.ID)
		if err != nil {
			return Channel{}, err
		}
		if err := in.Idempotency.Check(cur.Idem); err != nil {
			return Channel{}, err
		}
		cur.Replayed = true
		return cur, nil
	} else if err != nil {
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
	ch, err := s.normalize(in)
	if err != nil {
		return Channel{}, err
	}
	ch.ID, ch.TenantID, ch.CreatedAt, ch.Confirm = cur.ID, cur.TenantID, cur.CreatedAt, ch.Type == TypeEmail
	ch.UpdatedAt = s.cfg.Now().UTC().Truncate(time.Millisecond)
	if err := s.keepLegacy(ctx, cur); err != nil {
		return Channel{}, err
	}
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

// errExists is a create whose id is taken: by an earlier attempt of the
// same Idempotency-Key request (random ids do not collide).
var errExists = errors.New("channel id exists")

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
	args := append([]any{mode, ch.TenantID, ch.ID, string(body), ch.CreatedAt.UnixMilli(), s.cfg.Quotas[quota.Channels], s.cfg.MaxLen}, fields...)
	res, err := s.commands.RunScript(ctx, putScript, []string{channelKey(ch.TenantID, ch.ID), tenantChannelsKey(ch.TenantID),
		events.EventStream(ch.TenantID), quota.Key(ch.TenantID)}, args...).Text()
	if err != nil {
		return fmt.Errorf("%s channel %s: %w", mode, ch.ID, err)
	}
	if ex := quota.ScriptExceeded(res, quota.Channels); ex != nil {
		return ex
	}
	switch res {
	case "ok":
		return nil
	case "not_found":
		return ErrNotFound
	case "exists":
		return errExists
	default:
		return fmt.Errorf("%s channel %s: unexpected script result %q", mode, ch.ID, res)
	}
}

// Delete removes the channel id of tenant and its attempts. Its pending
// deliveries give up when the notifier finds the channel gone.
func (s *Store) Delete(ctx context.Context, tenant, id string) error {
	if !validID(id) {
		return ErrNotFound
	}
	ev, err := channelEvent(events.ChannelDeleted, Channel{ID: id, TenantID: tenant})
	if err != nil {
		return err
	}
	fields, err := ev.StreamFields()
	if err != nil {
		return err
	}
	args := append([]any{tenant, id, s.cfg.MaxLen}, fields...)
	res, err := s.commands.RunScript(ctx, deleteScript,
		[]string{channelKey(tenant, id), tenantChannelsKey(tenant), events.EventStream(tenant), AttemptsKey(tenant, id)}, args...).Text()
	if err != nil {
		return fmt.Errorf("delete channel %s: %w", id, err)
	}
	if res != "ok" {
		return ErrNotFound
	}
	return nil
}

// EnqueueTest asks for a sample message to be sent to the tenant's channel
// id, whatever its severity filter and digest setting: it records a
// channel.test_requested.v1 event, which the notifier applies by queueing
// the delivery, and returns that delivery's id (ErrNotFound for a channel
// that is not the tenant's). The delivery shows in the channel's attempts
// once the notifier has tried it.
func (s *Store) EnqueueTest(ctx context.Context, tenant, id string) (string, error) {
	if !validID(id) {
		return "", ErrNotFound
	}
	eventID := uuid.New()
	did := DeliveryID(eventID.String(), id)
	ev, err := events.NewWithID(eventID, events.ChannelTestRequested, tenant, id,
		events.ChannelTestRequestedV1{ChannelID: id, DeliveryID: did})
	if err != nil {
		return "", err
	}
	fields, err := ev.StreamFields()
	if err != nil {
		return "", err
	}
	args := append([]any{tenant, s.cfg.MaxLen}, fields...)
	res, err := s.commands.RunScript(ctx, requestScript, []string{channelKey(tenant, id), events.EventStream(tenant)}, args...).Text()
	if err != nil {
		return "", fmt.Errorf("request test of channel %s: %w", id, err)
	}
	if res != "ok" {
		return "", ErrNotFound
	}
	return did, nil
}

// Get returns the channel id of tenant, or ErrNotFound (also for another
// tenant's channel).
func (s *Store) Get(ctx context.Context, tenant, id string) (Channel, error) {
	if !validID(id) {
		return Channel{}, ErrNotFound
	}
	raw, err := s.rdb.Get(ctx, channelKey(tenant, id)).Bytes()
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
	if ch.TenantID != tenant {
		return Channel{}, ErrNotFound
	}
	return ch, nil
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
		keys[i] = channelKey(tenant, id)
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

// Attempts returns the latest attempts (newest first, at most limit) of
// the tenant's channel id.
func (s *Store) Attempts(ctx context.Context, tenant, id string, limit int) ([]Attempt, error) {
	if _, err := s.Get(ctx, tenant, id); err != nil {
		return nil, err
	}
	raws, err := s.rdb.LRange(ctx, AttemptsKey(tenant, id), 0, int64(limit)-1).Result()
	if err != nil {
		return nil, fmt.Errorf("list attempts of %s: %w", id, err)
	}
	out := make([]Attempt, 0, len(raws))
	for _, raw := range raws {
		var a Attempt
		if err := json.Unmarshal([]byte(raw), &a); err != nil {
			return nil, fmt.Errorf("decode attempt of %s: %w", id, err)
		}
		out = append(out, a)
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
