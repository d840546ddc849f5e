// Package backoff is the one retry pause of certfleet: exponential growth
// from a first pause up to a cap, with jitter so that replicas that failed
// together (Redis or ClickHouse down) do not retry in lockstep.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy is an exponential backoff. The zero value pauses 1s, doubling up
// to 30s.
type Policy struct {
	// Initial is the pause after the first failure. Default 1s.
	Initial time.Duration
	// Max caps the pause. Default 30s.
	Max time.Duration
}

func (p Policy) withDefaults() Policy {
	if p.Initial <= 0 {
		p.Initial = time.Second
	}
	if p.Max <= 0 {
		p.Max = 30 * time.Second
	}
	if p.Max < p.Initial {
		p.Max = p.Initial
	}
	return p
}

// Delay is the pause after the failures-th failure in a row (1 for the
// first): Initial·2^(failures-1) capped at Max, then a random point in its
// upper half ("equal jitter"), so a pause never shrinks to nothing.
func (p Policy) Delay(failures int) time.Duration {
	p = p.withDefaults()
	d := p.Initial
	for i := 1; i < failures && d < p.Max; i++ {
		d *= 2
	}
	d = min(d, p.Max)
	half := d / 2
	return half + rand.N(d-half+1)
}

// Sleep waits d or until ctx is done; it reports whether the whole pause
// passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
