package events

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Stream names. Every consumer reads them through a consumer group.
const (
	// StreamEvents carries account, API key, domain and alert events.
	// Writers name it through EventStream and consumers through
	// EventStreams, never directly: it is being split into hash-tagged
	// partitions for Redis Cluster.
	StreamEvents = "events"
	// StreamResults carries scan.completed events from the agents.
	StreamResults = "results"
)

// EventStream is the stream the events of tenantID go to. Every key a
// command script writes together with the event must live in the same
// Redis Cluster slot as this stream.
func EventStream(tenantID string) string { return StreamEvents }

// EventStreams lists every stream EventStream can return, for consumers of
// the events. A consumer reads each with its own calls: streams of other
// slots cannot be read in one command on Redis Cluster.
func EventStreams() []string { return []string{StreamEvents} }

// JobStream is the stream of scan jobs for one shard. The shard number is a
// Redis Cluster hash tag, so the shard's stream, schedule and lease keys
// live in one slot and one Lua script can touch them all.
func JobStream(shard int) string { return fmt.Sprintf("jobs:{%02d}", shard) }

// ShardTag is the hash tag of a shard, e.g. "{07}", for keys that must share
// its slot.
func ShardTag(shard int) string { return fmt.Sprintf("{%02d}", shard) }

// ReadAll returns every event on stream, oldest first, outside any consumer
// group: for tools and tests that inspect a stream, never for consumers.
func ReadAll(ctx context.Context, rdb redis.UniversalClient, stream string) ([]Envelope, error) {
	msgs, err := rdb.XRange(ctx, stream, "-", "+").Result()
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", stream, err)
	}
	out := make([]Envelope, 0, len(msgs))
	for _, m := range msgs {
		e, err := FromStreamValues(m.Values)
		if err != nil {
			return nil, fmt.Errorf("decode %s entry %s: %w", stream, m.ID, err)
		}
		out = append(out, e)
	}
	return out, nil
}
