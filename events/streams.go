package events

import (
	"context"
	"fmt"
	"hash/fnv"
	"sort"

	"github.com/redis/go-redis/v9"
)

// Stream names. Every consumer reads them through a consumer group.
const (
	// StreamEvents is the name the streams of account, API key, domain,
	// alert, notification and client CA events start with: they are split
	// into hash-tagged partitions for Redis Cluster, which writers name
	// through EventStream (or CAStream) and consumers through
	// EventStreams, never by this name.
	StreamEvents = "events"
	// StreamResults carries scan.completed events from the agents.
	StreamResults = "results"
)

// EventPartitions is the number of partitions of the event stream. A
// tenant's partition is fixed by a hash of its id, so changing this number
// moves tenants to other streams and other slots: it is a constant, and
// changing it needs a migration (re-key every tenant-tagged key).
const EventPartitions = 16

// TenantTag is the Redis Cluster hash tag of tenantID's partition, e.g.
// "{t07}". The tenant's event stream and every key a command script writes
// together with one of its events carry it, so they share a slot.
func TenantTag(tenantID string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(tenantID))
	return partitionTag(h.Sum32() % EventPartitions)
}

// TenantNamespace starts every key of tenantID's own in its partition's
// slot ("tenant:{t07}:<tenant>:"): its records' indexes, API keys, held
// keys, ... A tenant that leaves has every key under it deleted.
func TenantNamespace(tenantID string) string {
	return "tenant:" + TenantTag(tenantID) + ":" + tenantID + ":"
}

// partitionTag is the hash tag of partition n: TenantTag and TenantTags
// share it, so the tags listed are exactly the tags handed out.
func partitionTag(n uint32) string { return fmt.Sprintf("{t%02d}", n) }

// eventStreamOf is the event stream carrying tag: EventStream and
// EventStreams share it, so consumers read exactly the streams written.
func eventStreamOf(tag string) string { return StreamEvents + ":" + tag }

// EventStream is the stream the events of tenantID go to, "events:{t07}".
// Every key a command script writes together with the event must carry
// TenantTag(tenantID), so it lives in the same Redis Cluster slot.
func EventStream(tenantID string) string { return eventStreamOf(TenantTag(tenantID)) }

// CAStream is the stream of the client CA's events. The CA is one per
// deployment, so its keys and events share their own slot, {ca}, rather
// than a tenant's.
const CAStream = StreamEvents + ":" + CATag

// CATag is the hash tag of every key of the client CA.
const CATag = "{ca}"

// EventStreams lists every stream EventStream can return, and CAStream, for
// consumers of the events. A consumer reads each with its own calls:
// streams of other slots cannot be read in one command on Redis Cluster.
func EventStreams() []string {
	out := make([]string, 0, EventPartitions+1)
	for _, tag := range TenantTags() {
		out = append(out, eventStreamOf(tag))
	}
	return append(out, CAStream)
}

// TenantTags lists every tag TenantTag can return, for keys split the same
// way as the event stream (e.g. a work queue per partition).
func TenantTags() []string {
	out := make([]string, EventPartitions)
	for i := range out {
		out[i] = partitionTag(uint32(i))
	}
	return out
}

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

// ReadAllEvents returns every event on every stream of EventStreams, in
// stream-id order (entries of one millisecond on two streams in either
// order): for tools and tests, never for consumers.
func ReadAllEvents(ctx context.Context, rdb redis.UniversalClient) ([]Envelope, error) {
	type entry struct {
		ms, seq uint64
		e       Envelope
	}
	var all []entry
	for _, stream := range EventStreams() {
		msgs, err := rdb.XRange(ctx, stream, "-", "+").Result()
		if err != nil {
			return nil, fmt.Errorf("read stream %s: %w", stream, err)
		}
		for _, m := range msgs {
			e, err := FromStreamValues(m.Values)
			if err != nil {
				return nil, fmt.Errorf("decode %s entry %s: %w", stream, m.ID, err)
			}
			var ms, seq uint64
			if _, err := fmt.Sscanf(m.ID, "%d-%d", &ms, &seq); err != nil {
				return nil, fmt.Errorf("stream %s entry id %q: %w", stream, m.ID, err)
			}
			all = append(all, entry{ms, seq, e})
		}
	}
	sort.SliceStable(all, func(i, j int) bool {
		if all[i].ms != all[j].ms {
			return all[i].ms < all[j].ms
		}
		return all[i].seq < all[j].seq
	})
	out := make([]Envelope, len(all))
	for i, a := range all {
		out[i] = a.e
	}
	return out, nil
}

// ReadEventsNamed is ReadAllEvents of one event name: for tools and tests.
func ReadEventsNamed(ctx context.Context, rdb redis.UniversalClient, name string) ([]Envelope, error) {
	all, err := ReadAllEvents(ctx, rdb)
	if err != nil {
		return nil, err
	}
	var out []Envelope
	for _, e := range all {
		if e.Name == name {
			out = append(out, e)
		}
	}
	return out, nil
}
