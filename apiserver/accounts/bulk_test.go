package accounts

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/testenv"
)

// TestAddDomainsInOrder: AddDomains over more than one script call keeps
// the request's order: a name repeated later in the request is the
// earlier item's domain, past the quota the later items are the ones
// refused, and a bad item fails alone.
func TestAddDomainsInOrder(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	const limit = addChunk + 10
	s, err := New(Config{Quotas: quota.Limits{quota.Domains: limit}}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	tenant := events.TenantID("order@example.com")
	nds := make([]NewDomain, limit+20)
	for i := range nds {
		nds[i] = NewDomain{Host: fmt.Sprintf("h%d.example.com", i), Port: 443, Source: "import"}
	}
	nds[3].Tags = []string{""}                                     // bad: fails alone
	nds[addChunk+1] = NewDomain{Host: "h7.example.com", Port: 443} // the name of item 7, in the next call
	res, err := s.AddDomains(ctx, tenant, nds)
	if err != nil {
		t.Fatal(err)
	}
	var fe *FieldError
	if !errors.As(res[3].Err, &fe) {
		t.Errorf("item 3: got %v, want a FieldError", res[3].Err)
	}
	if r := res[addChunk+1]; r.Err != nil || r.Added || r.Domain.ID != res[7].Domain.ID {
		t.Errorf("repeated name: got %+v, want item 7's domain %s, not added", r, res[7].Domain.ID)
	}
	added := 0
	for i, r := range res {
		var ex *quota.Exceeded
		switch {
		case r.Added:
			added++
			if added > limit {
				t.Fatalf("item %d added past the quota of %d", i, limit)
			}
		case errors.As(r.Err, &ex):
			if added != limit {
				t.Errorf("item %d refused by the quota after %d added, want after %d", i, added, limit)
			}
		}
	}
	if added != limit {
		t.Errorf("got %d added, want the quota's %d", added, limit)
	}
}

// TestAddDomainsSpread: an import's first scans are spread over
// ImportSpacing per domain, the next import's window follows the first's,
// and no delay passes ImportMaxDelay.
func TestAddDomainsSpread(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	s, err := New(Config{ImportSpacing: time.Second, ImportMaxDelay: 15 * time.Second, Now: func() time.Time { return now }},
		rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	tenant := events.TenantID("spread@example.com")
	batch := func(prefix string, n int) []NewDomain {
		out := make([]NewDomain, n)
		for i := range out {
			out[i] = NewDomain{Host: fmt.Sprintf("%s%d.example.com", prefix, i), Port: 443}
		}
		return out
	}
	delays := func(res []AddResult) []time.Duration {
		t.Helper()
		byID := map[string]time.Duration{}
		for _, e := range streamEvents(t, rdb) {
			var p events.DomainAddedV1
			if e.Name == events.DomainAdded && e.Decode(&p) == nil {
				byID[p.DomainID] = time.Duration(p.FirstScanDelayMS) * time.Millisecond
			}
		}
		out := make([]time.Duration, len(res))
		for i, r := range res {
			out[i] = byID[r.Domain.ID]
		}
		return out
	}
	first, err := s.AddDomains(ctx, tenant, batch("a", 10))
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range delays(first) {
		if lo, hi := time.Duration(i)*time.Second, time.Duration(i+1)*time.Second; d < lo || d > hi {
			t.Errorf("first import, item %d: got delay %s, want within [%s, %s]", i, d, lo, hi)
		}
	}
	second, err := s.AddDomains(ctx, tenant, batch("b", 10))
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range delays(second) {
		lo := min(10*time.Second+time.Duration(i)*time.Second, 15*time.Second)
		if d < lo || d > 15*time.Second {
			t.Errorf("second import, item %d: got delay %s, want within [%s, 15s]", i, d, lo)
		}
	}
}
