package channels

// Email recipients' double opt-in: an address gets a channel's messages
// only once its owner confirmed it through a mailed link (internal/
// claimlink's Recipient). Confirmations are the tenant's, per address: a
// set of lower-case addresses in the tenant's slot, so removing an
// address and adding it again, to this channel or another, needs no new
// confirmation. The account's own email is confirmed by construction (its
// tenant id is derived from it, events.TenantID).

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
)

// ErrNotPending is a confirmation asked for an address the channel does
// not list, or one already confirmed.
var ErrNotPending = &InvalidError{msg: `field "address" must be a recipient of the channel that has not confirmed yet`}

// confirmedKey is the set of the tenant's confirmed addresses (addressKey).
func confirmedKey(tenant string) string {
	return "notify:tenant:" + events.TenantTag(tenant) + ":" + tenant + ":confirmed"
}

// addressKey is how addresses compare: without regard to case, as
// normalize refuses a recipient listed twice and events.TenantID reads an
// account's email.
func addressKey(a string) string { return strings.ToLower(a) }

// addressKeys are the members of the confirmed set that stand for to.
func addressKeys(to []string) []any {
	members := make([]any, len(to))
	for i, a := range to {
		members[i] = addressKey(a)
	}
	return members
}

// indexAddress is the index in list of the address a (addressKey), or -1.
func indexAddress(list []string, a string) int {
	return slices.IndexFunc(list, func(b string) bool { return addressKey(b) == addressKey(a) })
}

// ownAddress tells whether addr is the account tenant's own email.
func ownAddress(tenant, addr string) bool { return events.TenantID(addr) == tenant }

// Pending returns, for each of the tenant's channels chs, the recipients
// that have not confirmed yet, in the channel's order (nil when none: every
// channel but an email one written since double opt-in).
func (s *Store) Pending(ctx context.Context, tenant string, chs ...Channel) ([][]string, error) {
	out := make([][]string, len(chs))
	cmds := make([]*redis.BoolSliceCmd, len(chs))
	pipe := s.rdb.Pipeline()
	for i, ch := range chs {
		if ch.Type != TypeEmail || !ch.Confirm || len(ch.To) == 0 {
			continue
		}
		cmds[i] = pipe.SMIsMember(ctx, confirmedKey(tenant), addressKeys(ch.To)...)
	}
	if pipe.Len() == 0 {
		return out, nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read confirmed recipients of %s: %w", tenant, err)
	}
	for i, cmd := range cmds {
		if cmd == nil {
			continue
		}
		for j, confirmed := range cmd.Val() {
			if a := chs[i].To[j]; !confirmed && !ownAddress(tenant, a) {
				out[i] = append(out[i], a)
			}
		}
	}
	return out, nil
}

// Confirmed returns ch's recipients that get its messages: To without
// the pending ones.
func (s *Store) Confirmed(ctx context.Context, ch Channel) ([]string, error) {
	pending, err := s.Pending(ctx, ch.TenantID, ch)
	if err != nil {
		return nil, err
	}
	if len(pending[0]) == 0 {
		return ch.To, nil
	}
	var out []string
	for _, a := range ch.To {
		if indexAddress(pending[0], a) < 0 {
			out = append(out, a)
		}
	}
	return out, nil
}

// confirmScript adds an address to the tenant's confirmed set and records
// the event, once. KEYS: confirmed set, events stream. ARGV: address,
// maxlen, then the event's fields. Returns 1 when newly confirmed.
var confirmScript = redis.NewScript(`
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
return 1
`)

// ConfirmRecipient records that address's owner confirmed it gets the
// tenant's alerts (channel.recipient_confirmed.v1, once: confirming again
// changes nothing). The caller opened a link sealed for tenant and
// address.
func (s *Store) ConfirmRecipient(ctx context.Context, tenant, address string) error {
	key := addressKey(address)
	ev, err := events.New(events.RecipientConfirmed, tenant, key, events.RecipientConfirmedV1{Address: address})
	if err != nil {
		return err
	}
	fields, err := ev.StreamFields()
	if err != nil {
		return err
	}
	args := append([]any{key, s.cfg.MaxLen}, fields...)
	if err := s.commands.RunScript(ctx, confirmScript, []string{confirmedKey(tenant), events.EventStream(tenant)}, args...).Err(); err != nil {
		return fmt.Errorf("confirm recipient of %s: %w", tenant, err)
	}
	return nil
}

// RequestConfirmation asks for the confirmation mail of address, a
// pending recipient of the tenant's email channel id, to be sent again:
// it records channel.confirmation_requested.v1, which the notifier
// applies within its limits per tenant and address. ErrNotFound for a
// channel that is not the tenant's, ErrNotPending for an address it does
// not list or that has confirmed.
func (s *Store) RequestConfirmation(ctx context.Context, tenant, id, address string) error {
	ch, err := s.Get(ctx, tenant, id)
	if err != nil {
		return err
	}
	pending, err := s.Pending(ctx, tenant, ch)
	if err != nil {
		return err
	}
	i := indexAddress(pending[0], address)
	if i < 0 {
		return ErrNotPending
	}
	ev, err := events.New(events.ConfirmationRequested, tenant, id,
		events.ConfirmationRequestedV1{ChannelID: id, Address: pending[0][i]})
	if err != nil {
		return err
	}
	fields, err := ev.StreamFields()
	if err != nil {
		return err
	}
	args := append([]any{tenant, s.cfg.MaxLen}, fields...)
	res, err := s.commands.RunScript(ctx, requestScript, []string{channelKey(tenant, id), events.EventStream(tenant)}, args...).Text()
	if err != nil {
		return fmt.Errorf("request confirmation for channel %s: %w", id, err)
	}
	if res != "ok" {
		return ErrNotFound
	}
	return nil
}

// keepLegacy moves the recipients of cur, a channel written before double
// opt-in (Confirm false), into the tenant's confirmed set before the
// channel is rewritten with Confirm: they counted as confirmed, and an
// update must not silence them. Adding them twice is harmless, so this
// needs no atomic step with the write that follows (which waits for the
// replicas after it, and replication keeps the order).
func (s *Store) keepLegacy(ctx context.Context, cur Channel) error {
	if cur.Type != TypeEmail || cur.Confirm || len(cur.To) == 0 {
		return nil
	}
	if err := s.rdb.SAdd(ctx, confirmedKey(cur.TenantID), addressKeys(cur.To)...).Err(); err != nil {
		return fmt.Errorf("keep the recipients of channel %s: %w", cur.ID, err)
	}
	return nil
}
