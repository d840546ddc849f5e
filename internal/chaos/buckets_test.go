package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/coordinator"
	"github.com/certfleet/certfleet/events"
)

// bulk imports hostnames for the account of the bearer key through
// POST /api/v1/domains/bulk and returns the new domains' ids.
func (f *fleet) bulk(key string, hosts []string) []string {
	f.t.Helper()
	items := make([]map[string]string, len(hosts))
	for i, h := range hosts {
		items[i] = map[string]string{"hostname": h}
	}
	body, _ := json.Marshal(items)
	req, _ := http.NewRequest(http.MethodPost, f.api+"/api/v1/domains/bulk", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		f.t.Fatalf("bulk import: %v", err)
	}
	defer resp.Body.Close()
	var r struct {
		Created int `json:"created"`
		Results []struct {
			ID string `json:"id"`
		} `json:"results"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != http.StatusOK || r.Created != len(hosts) {
		f.t.Fatalf("bulk import: HTTP %d, %d of %d created (%v)", resp.StatusCode, r.Created, len(hosts), err)
	}
	ids := make([]string, len(r.Results))
	for i, res := range r.Results {
		ids[i] = res.ID
	}
	return ids
}

// A coordinator killed (SIGKILL) again and again while imports fill the
// schedule and its buckets split (--schedule-bucket-size 4, so that a
// few thousand domains split hundreds): once a coordinator runs again,
// every imported domain is scheduled, in exactly one bucket, the one the
// walk down the split buckets finds; no split bucket holds anything;
// every bucket is a compact listpack; and the fleet still scans.
func TestCoordinatorKilledWhileBucketsSplit(t *testing.T) {
	s := suite(t)
	f := newFleet(t, s)
	ctx := context.Background()
	co := f.restartWith("coordinator", "--schedule-bucket-size", "4")

	tn := f.newTenant()
	key := f.bearer(tn.email)
	const parts, perPart = 2, 2000
	var ids []string
	kills := 0
	for part := range parts {
		hosts := make([]string, perPart)
		for i := range hosts {
			hosts[i] = fmt.Sprintf("h%d-%d.splits.test", part, i)
		}
		ids = append(ids, f.bulk(key, hosts)...)
		// Kill it while it applies what the import published (and
		// splits), start it again, and kill it again.
		for range 3 {
			time.Sleep(time.Duration(50+rand.IntN(300)) * time.Millisecond)
			co.kill()
			kills++
			co.run(t, f.bin)
		}
	}

	// Every domain is applied once a coordinator runs long enough: a
	// coordinator that stops making progress for a minute fails, one
	// that is only slow (a loaded machine under -race took 44 s where an
	// idle one takes 10) gets three minutes in all.
	start, progress, best := time.Now(), time.Now(), len(ids)+1
	for {
		left := 0
		for _, id := range ids {
			known, scheduled, err := coordinator.DomainState(ctx, f.rdb, id, shards)
			if err != nil {
				t.Fatal(err)
			}
			if !known || !scheduled {
				left++
			}
		}
		if left == 0 {
			break
		}
		if left < best {
			best, progress = left, time.Now()
		}
		if time.Since(progress) > time.Minute || time.Since(start) > max(s.settle, 3*time.Minute) {
			t.Fatalf("%d of %d imported domains not scheduled %s after the last restart (the last one %s ago)",
				left, len(ids), time.Since(start).Round(time.Second), time.Since(progress).Round(time.Second))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("%d domains imported, the coordinator killed %d times: all scheduled %s after the last restart",
		len(ids), kills, time.Since(start).Round(time.Millisecond))

	// Exactly one bucket holds each, the one the walk finds.
	held := map[string][]string{}
	var bucketKeys []string
	iter := f.rdb.Scan(ctx, 0, "domains:{*}:*", 1000).Iterator()
	for iter.Next(ctx) {
		if k := iter.Val(); !strings.HasSuffix(k, ":removed") {
			bucketKeys = append(bucketKeys, k)
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	for _, k := range bucketKeys {
		fields, err := f.rdb.HKeys(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range fields {
			id := coordinator.IDOf(m)
			held[id] = append(held[id], k)
		}
		for _, key := range []string{k, strings.Replace(k, "domains:", "schedule:", 1)} {
			if enc := f.rdb.ObjectEncoding(ctx, key).Val(); enc != "listpack" && enc != "" {
				t.Errorf("%s: encoding %s", key, enc)
			}
		}
	}
	for _, id := range ids {
		want, _, err := coordinator.DomainKeys(ctx, f.rdb, id, shards)
		if err != nil {
			t.Fatal(err)
		}
		if got := held[id]; len(got) != 1 || got[0] != want {
			t.Errorf("%s: held by %v, the walk finds %s", id, got, want)
		}
	}
	splits := 0
	for n := range shards {
		split, err := f.rdb.SMembers(ctx, "split:"+events.ShardTag(n)).Result()
		if err != nil {
			t.Fatal(err)
		}
		splits += len(split)
		for _, b := range split {
			if _, err := strconv.Atoi(b); err != nil {
				t.Errorf("split set of shard %d: %q", n, b)
			}
			tag := events.ShardTag(n) + ":" + b
			if k := f.rdb.Exists(ctx, "domains:"+tag, "schedule:"+tag).Val(); k != 0 {
				t.Errorf("split bucket %s still has keys", tag)
			}
		}
	}
	// 4,000 domains in buckets of at most 4, from 4 x 32: some 900 splits.
	if splits < len(ids)/4-shards*32 {
		t.Errorf("%d splits for %d domains in buckets of 4", splits, len(ids))
	}
	t.Logf("%d buckets split", splits)
	t.Logf("the fleet still scans: a new domain stored %s after its add", f.probe(s.settle).Round(time.Millisecond))
}
