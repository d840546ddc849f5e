package agent

import (
	"context"
	"slices"
	"sync"
)

// fairSlots shares the agent's handshake slots between tenants.
//
// Why this shape: one tenant's domain with hundreds of addresses that never
// answer used to hold every slot for the length of its handshake timeouts,
// queueing every other tenant's scan behind it. Three rules, each simple,
// keep that from happening:
//
//   - A freed slot goes to the waiting tenant that holds the fewest slots
//     (the oldest waiter first among equals), not to whoever asked first.
//     A tenant with a flood waiting therefore gets a slot only when no
//     tenant holding fewer wants one: another tenant's scan waits for the
//     next slot to be freed, never behind the flood. Slots are counted,
//     not the time they are held, because a scan of one IP is bounded by
//     its timeouts anyway; least-held-first is what evens the holding out.
//   - A tenant holding half the slots or more gets another only while more
//     than a reserve (an eighth) stays free, so a tenant arriving while one
//     tenant floods usually finds a free slot at once instead of waiting for
//     a handshake to end. One tenant alone can use all but the reserve.
//   - A job scans at most MaxHandshakesPerJob of its addresses at once (the
//     Scanner runs that many workers per job), so one domain never takes
//     the whole tenant's share either.
//
// Within a tenant, waiters are served in the order they asked.
type fairSlots struct {
	total, reserve int

	mu      sync.Mutex
	free    int
	seq     uint64
	held    map[string]int
	waiting map[string][]*slotWaiter
}

type slotWaiter struct {
	seq   uint64
	ready chan struct{} // closed when the slot is granted
}

func newFairSlots(total int) *fairSlots {
	return &fairSlots{
		total: total, reserve: total / 8, free: total,
		held: map[string]int{}, waiting: map[string][]*slotWaiter{},
	}
}

// acquire waits for a slot for tenant, or for ctx to end (then it holds
// none and returns ctx's error). Every nil return is paired with a release.
func (f *fairSlots) acquire(ctx context.Context, tenant string) error {
	f.mu.Lock()
	w := &slotWaiter{seq: f.seq, ready: make(chan struct{})}
	f.seq++
	f.waiting[tenant] = append(f.waiting[tenant], w)
	f.grant()
	f.mu.Unlock()

	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-w.ready:
		// Granted while ctx ended: hand it on.
		f.releaseLocked(tenant)
	default:
		q := f.waiting[tenant]
		if i := slices.Index(q, w); i >= 0 {
			f.setQueue(tenant, slices.Delete(q, i, i+1))
		}
	}
	return ctx.Err()
}

// release returns a slot acquired for tenant.
func (f *fairSlots) release(tenant string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.releaseLocked(tenant)
}

func (f *fairSlots) releaseLocked(tenant string) {
	if f.held[tenant]--; f.held[tenant] <= 0 {
		delete(f.held, tenant)
	}
	f.free++
	f.grant()
}

// grant hands free slots to waiters by the rules above.
func (f *fairSlots) grant() {
	for f.free > 0 {
		var (
			best    string
			bestSeq uint64
			found   bool
		)
		for t, q := range f.waiting {
			held := f.held[t]
			if 2*held >= f.total && f.free <= f.reserve {
				continue
			}
			if !found || held < f.held[best] || (held == f.held[best] && q[0].seq < bestSeq) {
				best, bestSeq, found = t, q[0].seq, true
			}
		}
		if !found {
			return
		}
		q := f.waiting[best]
		w := q[0]
		f.setQueue(best, q[1:])
		f.held[best]++
		f.free--
		close(w.ready)
	}
}

func (f *fairSlots) setQueue(tenant string, q []*slotWaiter) {
	if len(q) == 0 {
		delete(f.waiting, tenant)
		return
	}
	f.waiting[tenant] = q
}
