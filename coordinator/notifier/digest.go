package notifier

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/internal/channels"
)

// Digest mode: a channel with Digest set gets one message a day, at
// Config.DigestHour UTC (--digest-hour, default 8), holding every alert
// raised or resolved for it since the previous one.
//
// A message is collected for the digest of its day: the next digest hour
// after the moment the notifier handles it. Per channel and day, Redis
// holds
//
//	notify:digest:{<channel>}:<day>:items   hash event id -> message JSON
//	notify:digest:{<channel>}:<day>:state   "closed" once the day's digest is made
//	notify:digest:{<channel>}:seen:<event>  an event already collected
//	notify:digest:due                       zset "<tenant>|<channel>|<day>" by send time
//
// (the hash tag keeps one channel's keys in one Redis Cluster slot, so each
// script touches one slot; the due set is only used with single-key
// commands). Collecting is one script: an event already seen is a no-op (a
// redelivered batch, two notifiers), and a day that is closed sends the
// message to the next day instead of losing it. At the digest hour every
// notifier looks at the due set; for a due day it closes the day (no
// message joins it afterwards), reads its messages and hands them to
// Store.EnqueueDigest with the day as key. That delivery's id is derived
// from the channel and the day and created with SETNX, so however many
// notifiers race, and whether one dies before or after enqueueing, the day
// makes exactly one delivery; the messages are deleted only after it
// exists. From there the digest is one delivery like any other: leased,
// retried with backoff, recorded in the channel's attempts.
//
// Days are UTC dates read on the notifier's clock; notifiers whose clocks
// differ by seconds agree on every day but the seconds around the digest
// hour, where the closed state sends a late message to the next day.

const (
	digestDueKey = "notify:digest:due"
	// digestKeep is how long collected messages wait for their digest: a
	// week of notifiers all down before any is lost.
	digestKeep = 8 * 24 * time.Hour
	// maxDigestMessages caps one digest (an email of 500 alerts is about
	// 1 MB); the rest are counted in a last line, most severe kept.
	maxDigestMessages = 500
	// digestBatch is how many due days one pass handles.
	digestBatch = 100
)

var digestsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "certfleet_notifier_digests_total",
	Help: "Daily digests made into deliveries (made) or found made by another notifier (already), and messages collected for them (collected).",
}, []string{"outcome"})

func digestItemsKey(channelID, day string) string {
	return "notify:digest:{" + channelID + "}:" + day + ":items"
}

func digestStateKey(channelID, day string) string {
	return "notify:digest:{" + channelID + "}:" + day + ":state"
}

func digestSeenKey(channelID, eventID string) string {
	return "notify:digest:{" + channelID + "}:seen:" + eventID
}

// digestDay returns the day (UTC date) whose digest a message handled at
// now joins, and when that digest is sent: the first digest hour after
// now.
func digestDay(now time.Time, hour int) (string, time.Time) {
	now = now.UTC()
	at := time.Date(now.Year(), now.Month(), now.Day(), hour, 0, 0, 0, time.UTC)
	if !now.Before(at) {
		at = at.AddDate(0, 0, 1)
	}
	return at.Format(time.DateOnly), at
}

func init() {
	newDigester = func(n *Notifier) (digester, error) {
		return &digests{n: n, logger: n.logger.Named("digest")}, nil
	}
}

// digests is the notifier's digester.
type digests struct {
	n      *Notifier
	logger *zap.Logger
}

// collectScript keeps a message for a day's digest. KEYS: items, state,
// seen. ARGV: event id, message JSON, ttl seconds. Returns 1 (kept), 0
// (seen before) or -1 (the day is closed: try the next).
var collectScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if redis.call('GET', KEYS[2]) == 'closed' then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('SET', KEYS[3], '1', 'EX', ARGV[3])
return 1
`)

// collect keeps msg for ch's next digest, once per msg.EventID.
func (d *digests) collect(ctx context.Context, ch Channel, msg Message) error {
	if msg.EventID == "" {
		return errors.New("collect for digest: message has no event id")
	}
	body, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("encode digest message: %w", err)
	}
	day, at := digestDay(d.n.now(), d.n.cfg.DigestHour)
	// A closed day only happens around the digest hour; two steps are
	// enough, three tolerate a clock far behind.
	for range 3 {
		// The due entry first: a crash after it leaves an empty day,
		// which a pass closes harmlessly; the other order could leave
		// messages no pass ever looks at.
		if err := d.n.rdb.ZAdd(ctx, digestDueKey, redis.Z{Score: float64(at.Unix()), Member: dueMember(ch.TenantID, ch.ID, day)}).Err(); err != nil {
			return fmt.Errorf("schedule digest %s of %s: %w", day, ch.ID, err)
		}
		res, err := collectScript.Run(ctx, d.n.rdb,
			[]string{digestItemsKey(ch.ID, day), digestStateKey(ch.ID, day), digestSeenKey(ch.ID, msg.EventID)},
			msg.EventID, string(body), int(digestKeep.Seconds())).Int()
		if err != nil {
			return fmt.Errorf("collect %s for digest %s of %s: %w", msg.EventID, day, ch.ID, err)
		}
		if res >= 0 {
			if res == 1 {
				digestsTotal.WithLabelValues("collected").Inc()
				d.logger.Debug("collected for digest", zap.String("channel_id", ch.ID), zap.String("day", day),
					zap.String("event_id", msg.EventID))
			}
			return nil
		}
		at = at.AddDate(0, 0, 1)
		day = at.Format(time.DateOnly)
	}
	return fmt.Errorf("collect %s for digest of %s: every day up to %s is closed", msg.EventID, ch.ID, day)
}

func dueMember(tenant, channelID, day string) string {
	return tenant + "|" + channelID + "|" + day
}

// run makes the due digests into deliveries until ctx ends.
func (d *digests) run(ctx context.Context) {
	every := max(4*d.n.cfg.Poll, 50*time.Millisecond)
	for {
		if _, err := d.flushDue(ctx); err != nil && ctx.Err() == nil {
			d.logger.Warn("digest pass failed", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// flushDue makes every due digest into a delivery and returns how many
// deliveries this call created.
func (d *digests) flushDue(ctx context.Context) (int, error) {
	now := d.n.now()
	members, err := d.n.rdb.ZRangeByScore(ctx, digestDueKey, &redis.ZRangeBy{
		Min: "-inf", Max: fmt.Sprint(now.Unix()), Count: digestBatch,
	}).Result()
	if err != nil {
		return 0, fmt.Errorf("read due digests: %w", err)
	}
	made := 0
	var errs []error
	for _, m := range members {
		parts := strings.Split(m, "|")
		if len(parts) != 3 {
			d.n.rdb.ZRem(ctx, digestDueKey, m)
			continue
		}
		created, err := d.flush(ctx, parts[0], parts[1], parts[2])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if created {
			made++
		}
	}
	return made, errors.Join(errs...)
}

// closeScript closes a day and returns its messages; it may run again
// (another notifier, a retry after a crash) and returns the same ones, as
// nothing joins a closed day. KEYS: state, items. ARGV: ttl seconds.
var closeScript = redis.NewScript(`
redis.call('SET', KEYS[1], 'closed', 'EX', ARGV[1])
return redis.call('HVALS', KEYS[2])
`)

// flush makes one day's digest of a channel into a delivery. created is
// false when there was nothing to send or another notifier made it.
func (d *digests) flush(ctx context.Context, tenant, channelID, day string) (bool, error) {
	raws, err := closeScript.Run(ctx, d.n.rdb, []string{digestStateKey(channelID, day), digestItemsKey(channelID, day)},
		int(digestKeep.Seconds())).StringSlice()
	if err != nil {
		return false, fmt.Errorf("close digest %s of %s: %w", day, channelID, err)
	}
	msgs := make([]Message, 0, len(raws))
	for _, raw := range raws {
		var m Message
		if err := json.Unmarshal([]byte(raw), &m); err != nil {
			d.logger.Error("dropping undecodable digest message", zap.String("channel_id", channelID), zap.Error(err))
			continue
		}
		msgs = append(msgs, m)
	}
	log := d.logger.With(zap.String("channel_id", channelID), zap.String("day", day), zap.Int("messages", len(msgs)))
	created := false
	if len(msgs) > 0 {
		ch, err := d.n.channels.Get(ctx, tenant, channelID)
		switch {
		case errors.Is(err, channels.ErrNotFound):
			log.Info("dropping the digest of a deleted channel")
		case err != nil:
			return false, fmt.Errorf("read channel %s: %w", channelID, err)
		default:
			id, made, err := d.n.store.EnqueueDigest(ctx, ch, day, digestMessages(msgs))
			if err != nil {
				return false, err
			}
			created = made
			if made {
				digestsTotal.WithLabelValues("made").Inc()
				log.Info("digest queued", zap.String("delivery_id", id))
			} else {
				digestsTotal.WithLabelValues("already").Inc()
			}
		}
	}
	// Only now is the delivery there: the messages may go.
	pipe := d.n.rdb.Pipeline()
	pipe.Del(ctx, digestItemsKey(channelID, day))
	pipe.ZRem(ctx, digestDueKey, dueMember(tenant, channelID, day))
	if _, err := pipe.Exec(ctx); err != nil {
		// The next pass finds the day again; its delivery exists already.
		return created, fmt.Errorf("clear digest %s of %s: %w", day, channelID, err)
	}
	return created, nil
}

// digestMessages orders a digest (sortDigest) and caps it at
// maxDigestMessages, the last line counting what was left out.
func digestMessages(msgs []Message) []Message {
	sortDigest(msgs)
	if len(msgs) <= maxDigestMessages {
		return msgs
	}
	left := len(msgs) - (maxDigestMessages - 1)
	out := slices.Clone(msgs[:maxDigestMessages-1])
	return append(out, Message{
		EventID: "digest-truncated", Kind: "digest_truncated", Severity: SeverityInfo, Status: StatusTriggered,
		Title: fmt.Sprintf("%d more alerts are not shown in this digest", left),
		Text:  "The digest holds the most severe ones. GET /api/v1/alerts lists them all.",
	})
}

// sortDigest puts raised alerts before resolved ones, the most severe
// first, then by time and id: the top of a long digest is what needs
// action, and every notifier builds the same digest.
func sortDigest(msgs []Message) {
	slices.SortStableFunc(msgs, func(a, b Message) int {
		ra, rb := a.Status == StatusResolved, b.Status == StatusResolved
		if ra != rb {
			if ra {
				return 1
			}
			return -1
		}
		if c := cmp.Compare(channels.SeverityRank(b.Severity), channels.SeverityRank(a.Severity)); c != 0 {
			return c
		}
		if c := a.TriggeredAt.Compare(b.TriggeredAt); c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(a.AlertID, b.AlertID), cmp.Compare(a.EventID, b.EventID))
	})
}
