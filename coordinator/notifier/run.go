package notifier

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/events/stream"
	"github.com/certfleet/certfleet/internal/backoff"
	"github.com/certfleet/certfleet/internal/channels"
	"github.com/certfleet/certfleet/internal/claimlink"
	"github.com/certfleet/certfleet/internal/guard"
	"github.com/certfleet/certfleet/internal/health"
	"github.com/certfleet/certfleet/internal/ratelimit"
)

var (
	attemptsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "certfleet_notifier_attempts_total",
		Help: "Delivery attempts, by channel type and outcome (delivered, retrying, failed).",
	}, []string{"type", "status"})
	sendSeconds = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "certfleet_notifier_send_seconds",
		Help:    "Time of one send, by channel type.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
	}, []string{"type"})
)

// Notifier turns alert events into deliveries and sends them.
type Notifier struct {
	cfg    Config
	rdb    redis.UniversalClient
	store  *Store
	reg    *Registry
	logger *zap.Logger
	now    func() time.Time
	// events reads the alert events.
	events *stream.Consumer
	// digest collects the messages of digest channels; nil until digest.go
	// provides newDigester, and then digest channels get every message at
	// once.
	digest digester

	// channels reads the channels delivered to and opens their secrets.
	channels *channels.Store
	// mailer is the email sender, also for mail about the account itself
	// (claimmail.go); links seals claim approval links (nil without a
	// passphrase).
	mailer     *emailSender
	claimLinks *claimlink.Links
	// confirmLimits counts confirmation mails (confirmmail.go).
	confirmLimits *ratelimit.Limiter
}

// digester collects the messages of channels with Digest set and sends
// each channel's digest once a day. digest.go (D3) implements it and sets
// newDigester from an init function; the digest is sent by
// Store.EnqueueDigest, so it is leased, retried and recorded like every
// delivery.
type digester interface {
	// collect keeps msg for ch's next digest; it must be idempotent on
	// msg.EventID (a batch can be handled twice).
	collect(ctx context.Context, ch Channel, msg Message) error
	// run enqueues the digests that are due until ctx ends.
	run(ctx context.Context)
}

// newDigester builds the notifier's digester; set by digest.go.
var newDigester func(n *Notifier) (digester, error)

// New returns a notifier reading and queueing through rdb, with the
// webhook and Slack senders registered (dialing through the guard with
// cfg.Allow).
func New(cfg Config, rdb redis.UniversalClient, logger *zap.Logger) (*Notifier, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("notifier config: %w", err)
	}
	if rdb == nil {
		return nil, errors.New("notifier: redis client is required")
	}
	logger = logger.Named("notifier").With(zap.String("consumer", cfg.Consumer))
	store, err := NewStore(StoreConfig{AttemptsKept: cfg.AttemptsKept, TenantSends: cfg.TenantSends, Wait: cfg.Wait}, rdb)
	if err != nil {
		return nil, err
	}
	chans, err := channels.New(channels.Config{Passphrase: cfg.Passphrase, Targets: guard.Policy{Allow: cfg.Allow},
		Wait: cfg.Wait}, rdb, logger)
	if err != nil {
		return nil, err
	}
	n := &Notifier{cfg: cfg, rdb: rdb, store: store, channels: chans, reg: NewRegistry(), logger: logger, now: time.Now}
	if n.events, err = n.consumer(); err != nil {
		return nil, fmt.Errorf("notifier: %w", err)
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	client := guard.HTTPClient((&guard.Dialer{Policy: guard.Policy{Allow: cfg.Allow}, Timeout: cfg.Timeout}).DialHost, cfg.Timeout, roots)
	n.reg.Register(TypeWebhook, &webhookSender{client: client, maxResp: cfg.MaxResponseBytes, now: time.Now})
	n.reg.Register(TypeSlack, &slackSender{client: client, maxResp: cfg.MaxResponseBytes})
	// The relay is the operator's: the guard trusts what its name resolves
	// to (DialTrusted), cloud metadata apart.
	email, err := newEmailSender(cfg.SMTP, nil)
	if err != nil {
		return nil, err
	}
	n.reg.Register(TypeEmail, email)
	n.mailer, _ = email.(*emailSender)
	if cfg.Passphrase != "" {
		n.claimLinks = claimlink.New(cfg.Passphrase, rdb, nil)
	}
	if n.confirmLimits, err = ratelimit.New(rdb, confirmLimitPrefix); err != nil {
		return nil, err
	}
	if newDigester != nil {
		if n.digest, err = newDigester(n); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// Registry returns the senders by channel type; register more before Run.
func (n *Notifier) Registry() *Registry { return n.reg }

// Store returns the notifier's delivery queue.
func (n *Notifier) Store() *Store { return n.store }

// EnsureGroup creates the notifier's consumer group at the end of every
// event stream, unless it exists. A notifier deployed on an existing
// stream so starts with the alerts raised from then on, not with every
// alert in the stream's history.
func EnsureGroup(ctx context.Context, rdb redis.UniversalClient) error {
	for _, s := range events.EventStreams() {
		if err := stream.CreateGroup(ctx, rdb, s, Group, "$"); err != nil {
			return err
		}
	}
	return nil
}

// consumer reads the event streams in the notifier's group; a group it
// creates (Redis was down at EnsureGroup) also starts at the end.
func (n *Notifier) consumer() (*stream.Consumer, error) {
	return stream.New(stream.Config{
		Streams:   events.EventStreams(),
		Group:     Group,
		Consumer:  n.cfg.Consumer,
		ClaimIdle: n.cfg.ClaimIdle,
		StartID:   "$",
		Count:     200,
	}, n.rdb, n.logger)
}

// Register adds the notifier's event consumer to r's health checks.
func (n *Notifier) Register(r *health.Registry) {
	n.events.Register(r, "notifier_events")
}

// queueDepth is certfleet_notifier_queue_depth, read from Redis when
// Prometheus scrapes (one pipelined ZCARD per partition); the last answer
// when Redis does not answer within a second.
type queueDepth struct {
	store *Store
	desc  *prometheus.Desc
	mu    sync.Mutex
	last  float64
}

func (q *queueDepth) Describe(ch chan<- *prometheus.Desc) { ch <- q.desc }

func (q *queueDepth) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	q.mu.Lock()
	defer q.mu.Unlock()
	if n, err := q.store.Depth(ctx); err == nil {
		q.last = float64(n)
	}
	ch <- prometheus.MustNewConstMetric(q.desc, prometheus.GaugeValue, q.last)
}

// RegisterMetrics adds the notifier's queue depth to reg (the process's
// registry; once per process).
func (n *Notifier) RegisterMetrics(reg prometheus.Registerer) error {
	return reg.Register(&queueDepth{store: n.store, desc: prometheus.NewDesc("certfleet_notifier_queue_depth",
		"Deliveries waiting to be sent (due now or later, retries included).", nil, nil)})
}

// Run reads alert events and sends deliveries until ctx is done; sends in
// flight finish (within Timeout) before it returns.
func (n *Notifier) Run(ctx context.Context) error {
	if err := EnsureGroup(ctx, n.rdb); err != nil && ctx.Err() == nil {
		// The consumer creates it (at the end as well) when Redis is back.
		n.logger.Warn("create consumer group failed", zap.Error(err))
	}
	n.logger.Info("notifier started", zap.Int("workers", n.cfg.Workers), zap.Strings("types", n.reg.Types()))
	defer n.logger.Info("notifier stopped")
	var wg sync.WaitGroup
	for range n.cfg.Workers {
		wg.Go(func() { n.work(ctx) })
	}
	if n.digest != nil {
		wg.Go(func() { n.digest.run(ctx) })
	}
	err := n.events.RunBatches(ctx, n.handle)
	wg.Wait()
	return err
}

// handle makes the deliveries of a batch's alert events. Deliveries are
// created with SETNX on ids derived from the event and channel, so a batch
// handled twice (a redelivery, a retry after an error, another notifier)
// creates each once.
func (n *Notifier) handle(ctx context.Context, batch []stream.Entry) error {
	lists := make(map[string][]Channel)
	for _, e := range batch {
		switch e.Event.Name {
		case events.ChannelTestRequested:
			if err := n.applyTestRequest(ctx, e.Event); err != nil {
				return err
			}
			continue
		case events.APIKeyCreated:
			if err := n.mailClaimLink(ctx, e.Event); err != nil {
				return err
			}
			continue
		case events.ChannelCreated, events.ChannelUpdated, events.ConfirmationRequested:
			if err := n.mailConfirmations(ctx, e.Event); err != nil {
				return err
			}
			continue
		}
		if e.Event.Name != events.AlertRaised && e.Event.Name != events.AlertResolved {
			continue
		}
		msg, ok := n.message(e.Event)
		if !ok {
			continue
		}
		tenant := e.Event.TenantID
		list, seen := lists[tenant]
		if !seen {
			var err error
			if list, err = n.channels.List(ctx, tenant); err != nil {
				return err
			}
			lists[tenant] = list
		}
		for _, ch := range list {
			if !ch.Accepts(msg.Severity) {
				continue
			}
			if ch.Digest && n.digest != nil {
				if err := n.digest.collect(ctx, ch, msg); err != nil {
					return err
				}
				continue
			}
			id, created, err := n.store.Enqueue(ctx, ch, msg)
			if err != nil {
				return err
			}
			if created {
				n.logger.Debug("delivery queued", zap.String("delivery_id", id), zap.String("channel_id", ch.ID),
					zap.String("alert_id", msg.AlertID), zap.String("status", msg.Status))
			}
		}
	}
	return nil
}

// message turns an alert event into the message senders render. ok is
// false for an event that cannot be rendered (logged; retrying cannot fix
// it).
func (n *Notifier) message(ev events.Envelope) (Message, bool) {
	if ev.Name == events.AlertRaised {
		var p events.AlertRaisedV1
		if err := ev.Decode(&p); err != nil || p.AlertID == "" {
			n.logger.Error("skipping undecodable alert event", zap.String("event_id", ev.EventID.String()), zap.Error(err))
			return Message{}, false
		}
		msg := Message{
			EventID: ev.EventID.String(), AlertID: p.AlertID, Kind: p.AlertType, Severity: p.Severity, Status: StatusTriggered,
			Title: p.Title, Text: p.Message, DomainID: p.DomainID, Hostname: p.Hostname, Port: p.Port,
			ThresholdDays: p.ThresholdDays, LeafSHA256: p.LeafSHA256, IPs: p.IPs, Regions: p.Regions,
			TriggeredAt: p.TriggeredAt, Links: n.links(p.DomainID),
		}
		if msg.TriggeredAt.IsZero() {
			msg.TriggeredAt = ev.OccurredAt
		}
		return msg, true
	}
	var p events.AlertResolvedV1
	if err := ev.Decode(&p); err != nil || p.AlertID == "" {
		n.logger.Error("skipping undecodable alert event", zap.String("event_id", ev.EventID.String()), zap.Error(err))
		return Message{}, false
	}
	at := p.ResolvedAt
	if at.IsZero() {
		at = ev.OccurredAt
	}
	text := "Resolved"
	if p.Reason != "" {
		text += ": " + p.Reason
	}
	return Message{
		EventID: ev.EventID.String(), AlertID: p.AlertID, Kind: p.AlertType, Severity: p.Severity, Status: StatusResolved,
		Title: p.Title, Text: text, DomainID: p.DomainID, Hostname: p.Hostname, Port: p.Port,
		TriggeredAt: p.TriggeredAt, ResolvedAt: &at, ResolvedWhy: p.Reason, Links: n.links(p.DomainID),
	}, true
}

// links points to the domain's alerts and the domain in the API.
func (n *Notifier) links(domainID string) []Link {
	if n.cfg.PublicURL == "" || domainID == "" {
		return nil
	}
	base := n.cfg.PublicURL
	return []Link{
		{Title: "Alerts", URL: base + "/api/v1/alerts?domain_id=" + url.QueryEscape(domainID)},
		{Title: "Domain", URL: base + "/api/v1/domains/" + url.PathEscape(domainID)},
	}
}

// work sends due deliveries until ctx is done.
func (n *Notifier) work(ctx context.Context) {
	for ctx.Err() == nil {
		d, token, ok, err := n.store.claim(ctx, n.cfg.Lease)
		if err != nil {
			if ctx.Err() == nil {
				n.logger.Warn("claim failed", zap.Error(err))
			}
			backoff.Sleep(ctx, n.cfg.Poll)
			continue
		}
		if !ok {
			backoff.Sleep(ctx, n.cfg.Poll)
			continue
		}
		n.deliver(ctx, d, token)
	}
}

// deliver makes one attempt of d and records it. The send runs on its own
// deadline (send), not ctx's, so a stopping notifier finishes what it started
// instead of recording a cancellation as a failure.
func (n *Notifier) deliver(ctx context.Context, d delivery, token string) {
	sctx := WithDeliveryID(context.WithoutCancel(ctx), d.ID)
	if d.Digest {
		sctx = WithDigest(sctx)
	}
	start := time.Now()
	attempt := d.Attempts + 1
	typ, listed, err := n.send(sctx, d)
	took := time.Since(start)
	a := Attempt{DeliveryID: d.ID, EventID: d.EventID, Digest: d.Digest, Messages: len(d.Messages),
		Attempt: attempt, DurationMS: took.Milliseconds(), At: n.now().UTC().Truncate(time.Millisecond)}
	if !d.Digest {
		a.AlertID, a.AlertType = d.Messages[0].AlertID, d.Messages[0].Kind
	}
	var delay time.Duration
	if err == nil {
		a.Status = DeliveryDelivered
	} else {
		class, status, permanent := classifySend(err)
		a.ErrorClass, a.HTTPStatus, a.Error = class, status, shorten([]byte(guard.TenantError(err)))
		if permanent || attempt >= n.cfg.MaxAttempts {
			a.Status = DeliveryFailed
		} else {
			a.Status = DeliveryRetrying
			delay = backoff.Policy{Initial: n.cfg.Backoff, Max: n.cfg.MaxBackoff}.Delay(attempt)
			next := a.At.Add(delay)
			a.NextAt = &next
		}
	}
	sendSeconds.WithLabelValues(typ).Observe(took.Seconds())
	attemptsTotal.WithLabelValues(typ, a.Status).Inc()
	log := n.logger.With(zap.String("delivery_id", d.ID), zap.String("channel_id", d.ChannelID),
		zap.Int("attempt", attempt), zap.String("status", a.Status), zap.Duration("took", took))
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer fcancel()
	kept, ferr := n.store.finish(fctx, d, token, a, delay, listed)
	switch {
	case ferr != nil:
		// The lease runs out and the delivery is tried again: at least once.
		log.Warn("record attempt failed", zap.Error(ferr))
	case !kept:
		log.Warn("delivery lease lost before the attempt was recorded; another notifier owns it")
	case a.Status == DeliveryFailed:
		log.Warn("delivery gave up", zap.String("error_class", a.ErrorClass), zap.String("error", a.Error))
	case a.Status == DeliveryRetrying:
		log.Info("delivery attempt failed, will retry", zap.String("error_class", a.ErrorClass),
			zap.String("error", a.Error), zap.Duration("retry_in", delay))
	default:
		log.Info("delivered")
	}
}

// send loads d's channel and sends d's message. listed is false when the
// channel is gone (its attempts list went with it).
func (n *Notifier) send(ctx context.Context, d delivery) (typ string, listed bool, err error) {
	ch, err := n.channels.Get(ctx, d.TenantID, d.ChannelID)
	if errors.Is(err, channels.ErrNotFound) {
		return "none", false, &SendError{Class: ClassChannelDeleted, Permanent: true, Err: errors.New("the channel was deleted")}
	}
	if err != nil {
		return "none", true, err
	}
	sender, ok := n.reg.Sender(ch.Type)
	if !ok {
		return ch.Type, true, &SendError{Class: ClassConfig, Permanent: true,
			Err: fmt.Errorf("this notifier cannot send to %s channels", ch.Type)}
	}
	timeout := n.cfg.Timeout
	if ch.Type == TypeEmail {
		timeout = n.cfg.SMTP.Timeout
		// Only confirmed recipients get messages (confirmmail.go), read
		// at send time, so a confirmation counts from the next send.
		if ch.To, err = n.channels.Confirmed(ctx, ch); err != nil {
			return ch.Type, true, err
		}
		if len(ch.To) == 0 {
			return ch.Type, true, &SendError{Class: ClassUnconfirmed, Permanent: true,
				Err: errors.New("no recipient of this channel has confirmed its address yet: each was mailed a link to confirm (POST /api/v1/channels/{id}/confirmations mails it again)")}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ch, err = n.channels.OpenSecret(ctx, ch)
	if err != nil {
		return ch.Type, true, &SendError{Class: ClassSecret, Err: err}
	}
	return ch.Type, true, sender.Send(ctx, ch, d.Messages)
}
