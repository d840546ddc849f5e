package health

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// ErrNotConnected is the error of a dependency whose connection is not
// opened yet: a role started while ClickHouse did not answer runs without
// it until it does (schema.Lazy). It is unavailability.
var ErrNotConnected = errors.New("not connected yet: the dependency did not answer since the process started")

// Unavailable tells whether err means a dependency (Redis, ClickHouse)
// could not be reached or is not serving yet: a failure that a retry a
// little later fixes, which the APIs answer 503 with Retry-After instead
// of 500. It recognises connection failures (refused, reset, closed, timed
// out, a pool that could not connect) and the Redis replies of a server
// that is loading, failing over or re-sharding. ctx is the request's: a
// deadline the client gave up on is not the dependency's fault.
func Unavailable(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	var opErr *net.OpError
	var netErr net.Error
	switch {
	case errors.As(err, &opErr),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, redis.ErrPoolTimeout), errors.Is(err, redis.ErrClosed),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, ErrNotConnected):
		return true
	case errors.As(err, &netErr) && netErr.Timeout():
		return true
	}
	for _, prefix := range []string{"LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY"} {
		if redis.HasErrorPrefix(err, prefix) {
			return true
		}
	}
	// clickhouse-go reports a connection it could not open without a
	// typed error on some paths.
	return strings.Contains(err.Error(), "clickhouse: acquire conn timeout")
}

// OutOfMemory tells whether err is Redis refusing a write because it
// reached maxmemory under the noeviction policy (an OOM reply, also from a
// write inside a script). Reads still work; writes fail until memory is
// freed (trimmed streams, a raised limit), so the APIs answer it 503 with
// Retry-After, saying so, instead of 500.
func OutOfMemory(err error) bool {
	return err != nil && redis.HasErrorPrefix(err, "OOM")
}
