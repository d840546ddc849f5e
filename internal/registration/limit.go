package registration

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/internal/ratelimit"
)

// LimitPrefix is the prefix of the rate limiter's Redis keys, one per
// registry server: reglimit:<server>, where server is an RDAP URL's host
// (host or host:port) or a WHOIS server's host:port. Each script touches
// one key, so no hash tag is needed on Redis Cluster.
const LimitPrefix = "reglimit:"

// serverLimiter paces the queries to each registry server across every
// replica: one shared GCRA budget per server in Redis (internal/ratelimit),
// and a server's Retry-After holds every replica off until it passes.
type serverLimiter struct {
	rl     *ratelimit.Limiter
	def    ratelimit.Limit
	per    map[string]ratelimit.Limit
	logger *zap.Logger
}

func newServerLimiter(rdb redis.UniversalClient, def ratelimit.Limit, per map[string]ratelimit.Limit, logger *zap.Logger) (*serverLimiter, error) {
	rl, err := ratelimit.New(rdb, LimitPrefix)
	if err != nil {
		return nil, err
	}
	return &serverLimiter{rl: rl, def: def, per: per, logger: logger}, nil
}

func (s *serverLimiter) limit(server string) ratelimit.Limit {
	if l, ok := s.per[server]; ok {
		return l
	}
	return s.def
}

// Wait blocks until server may be asked once more, or ctx ends.
func (s *serverLimiter) Wait(ctx context.Context, server string) error {
	return s.rl.Wait(ctx, server, s.limit(server))
}

// Defer records that server asked to be left alone until until: no
// replica asks it before then. A failure to record it is logged, not
// returned: the lookup's own answer (rate-limited, retry after) stands.
func (s *serverLimiter) Defer(ctx context.Context, server string, until time.Time) {
	if err := s.rl.Hold(ctx, server, s.limit(server), until); err != nil {
		s.logger.Warn("record server retry-after", zap.String("server", server), zap.Time("until", until), zap.Error(err))
	}
}
