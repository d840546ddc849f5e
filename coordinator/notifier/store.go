package notifier

import (
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/replicated"
)

// The delivery queue's keys are in queue.go; the channels and their
// attempts lists are internal/channels' keys.

// StoreConfig configures a Store.
type StoreConfig struct {
	// MaxLen caps the events stream (XADD MAXLEN ~). Default
	// events.DefaultMaxLen.
	MaxLen int64
	// AttemptsKept is how many attempts are kept per channel. Default 200.
	AttemptsKept int
	// TenantSends is how many deliveries of one tenant may be in flight at
	// once, over every worker of every notifier sharing the queue: a
	// tenant whose receivers hang holds at most this many workers, and
	// its other deliveries wait their turn in order. Every notifier
	// sharing a queue must use the same. Default 1.
	TenantSends int
	// Wait is how many replicas must hold a new delivery before Enqueue
	// returns, so the alert event it comes from is acknowledged only once
	// a failover cannot lose it. Default: no wait.
	Wait replicated.Config
}

func (c *StoreConfig) setDefaults() {
	if c.MaxLen == 0 {
		c.MaxLen = events.DefaultMaxLen
	}
	if c.AttemptsKept == 0 {
		c.AttemptsKept = 200
	}
	if c.TenantSends == 0 {
		c.TenantSends = 1
	}
}

// Validate reports every problem of the configuration.
func (c *StoreConfig) Validate() error {
	if err := c.Wait.Validate(); err != nil {
		return err
	}
	if c.MaxLen < 1 || c.AttemptsKept < 1 || c.TenantSends < 1 {
		return errors.New("max len, attempts kept and tenant sends must be positive")
	}
	return nil
}

// Store is the notifier's delivery queue in Redis (queue.go): every
// notifier replica has one and they share the queue through Redis. The
// channels it delivers to are read through internal/channels.
type Store struct {
	cfg StoreConfig
	rdb redis.UniversalClient
	// enqueues creates deliveries, waiting for replicas.
	enqueues *replicated.Writer
}

// NewStore returns a delivery queue on rdb.
func NewStore(cfg StoreConfig, rdb redis.UniversalClient) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("notifier store config: %w", err)
	}
	if rdb == nil {
		return nil, errors.New("notifier store: redis client is required")
	}
	enqueues, err := replicated.New(cfg.Wait, rdb)
	if err != nil {
		return nil, fmt.Errorf("notifier store: %w", err)
	}
	return &Store{cfg: cfg, rdb: rdb, enqueues: enqueues}, nil
}
