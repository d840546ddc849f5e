package projector

import (
	"context"
	"reflect"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

// hgetalls is how many HGETALL Redis ran since its stats were reset.
func hgetalls(t *testing.T, rdb *redis.Client) int {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`cmdstat_hgetall:calls=(\d+)`).FindStringSubmatch(info)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// A ViewCache answers what Views reads, at every step of a view's life
// (scans, a rename, a removal, a view never written), and reads a view
// whole again only when its version moved: an unchanged view is a hit.
func TestViewCache(t *testing.T) {
	ctx := context.Background()
	p, rdb := newProjector(t)
	na := t0.Add(90 * 24 * time.Hour)
	ids := []string{domainID, "never-scanned"}
	for _, size := range []int{0, 1} {
		c := NewViewCache(size)
		check := func(step string, wantReads int) {
			t.Helper()
			rdb.ConfigResetStat(ctx)
			got, err := c.Views(ctx, rdb, ids)
			if err != nil {
				t.Fatal(err)
			}
			reads := hgetalls(t, rdb)
			want, err := Views(ctx, rdb, ids)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("size %d, %s: got %+v, want what Views reads, %+v", size, step, got, want)
			}
			if reads != wantReads {
				t.Errorf("size %d, %s: %d views read whole, want %d", size, step, reads, wantReads)
			}
		}
		// A view with no version (none yet) is read every time.
		check("nothing applied", 2)
		if err := p.Apply(ctx, scan(t, "eu-west", t0, okResult("192.0.2.1", "aa", na))); err != nil {
			t.Fatal(err)
		}
		check("first scan", 2)
		check("unchanged", 1)
		if err := p.Apply(ctx, scan(t, "us-east", t0.Add(time.Minute), okResult("192.0.2.2", "bb", na))); err != nil {
			t.Fatal(err)
		}
		check("second region", 2)
		check("unchanged again", 1)
		// An older scan changes nothing, and is still a hit.
		if err := p.Apply(ctx, scan(t, "eu-west", t0.Add(-time.Hour), okResult("192.0.2.9", "old", na))); err != nil {
			t.Fatal(err)
		}
		check("older scan", 1)
		if err := p.Apply(ctx, domainEvent(t, events.DomainUpdated, "renamed.example", 443, t0.Add(time.Hour))); err != nil {
			t.Fatal(err)
		}
		check("rename", 2)
		if err := p.Apply(ctx, removed(t, t0.Add(2*time.Hour))); err != nil {
			t.Fatal(err)
		}
		check("removal", 2)
		if err := rdb.Del(ctx, ViewKey(domainID)).Err(); err != nil {
			t.Fatal(err)
		}
		check("view gone", 2)
	}
}

// BenchmarkViewCache reads a page of 100 views of three regions and two
// IPs each, unchanged since the last page, through Views (the baseline,
// in the same run) and through a ViewCache.
//
//	go test -run '^$' -bench ViewCache ./apiserver/projector/
func BenchmarkViewCache(b *testing.B) {
	ctx := context.Background()
	rdb := testenv.Redis(b).Client(b)
	p, err := New(Config{Consumer: "bench"}, rdb, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	na := t0.Add(90 * 24 * time.Hour)
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = "bench-domain-" + strconv.Itoa(i)
		for _, region := range []string{"eu-west", "us-east", "ap-south"} {
			job := uuid.New()
			ev, err := events.NewWithID(events.ScanEventID(job, region), events.ScanCompleted, tenant, ids[i], events.ScanCompletedV1{
				JobID: job, DomainID: ids[i], Host: "www" + strconv.Itoa(i) + ".example.com", Port: 443, Region: region, Agent: "a1",
				StartedAt: t0.Add(-time.Second), FinishedAt: t0,
				Results: []events.IPResult{okResult("192.0.2.1", "leaf"+strconv.Itoa(i), na), okResult("192.0.2.2", "leaf"+strconv.Itoa(i), na)},
			})
			if err != nil {
				b.Fatal(err)
			}
			if err := p.Apply(ctx, ev); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("views", func(b *testing.B) {
		for b.Loop() {
			if _, err := Views(ctx, rdb, ids); err != nil {
				b.Fatal(err)
			}
		}
	})
	c := NewViewCache(0)
	b.Run("cache", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Views(ctx, rdb, ids); err != nil {
				b.Fatal(err)
			}
		}
	})
}
