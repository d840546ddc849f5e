package alerts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
)

// Alert statuses in the list.
const (
	StatusActive   = "active"
	StatusResolved = "resolved"
	// StatusNotice is a one-shot alert (cert_changed): it tells of a
	// change and is never resolved.
	StatusNotice = "notice"
)

// Alert is an alert as the list shows it.
type Alert struct {
	events.AlertRaisedV1
	// Status is active, resolved or notice.
	Status string
	// ResolvedAt and Reason are set once resolved.
	ResolvedAt *time.Time
	Reason     string
}

// ErrBadPage is a page or page size below 1, or a page whose first item
// is past any list's length (its offset would not fit in an int64).
var ErrBadPage = errors.New("page and per_page must be at least 1, and their product must fit in 64 bits")

// List returns one page (from 1) of tenantID's alerts, newest first, only
// those of domainID unless it is "", and how many there are in all. The
// API checks page against its documented cap first; List refuses what
// would overflow (ErrBadPage) so no caller can wrap to a negative offset.
func (e *Engine) List(ctx context.Context, tenantID, domainID string, page, perPage int) ([]Alert, int, error) {
	if page < 1 || perPage < 1 || int64(page-1) > math.MaxInt64/int64(perPage)-1 {
		return nil, 0, ErrBadPage
	}
	key := tenantKey(tenantID)
	if domainID != "" {
		key = tenantDomainKey(tenantID, domainID)
	}
	start := int64(page-1) * int64(perPage)
	var (
		total *redis.IntCmd
		ids   *redis.StringSliceCmd
	)
	if _, err := e.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		total = pipe.ZCard(ctx, key)
		ids = pipe.ZRevRange(ctx, key, start, start+int64(perPage)-1)
		return nil
	}); err != nil {
		return nil, 0, fmt.Errorf("list alerts of %s: %w", tenantID, err)
	}
	out := make([]Alert, 0, len(ids.Val()))
	if len(ids.Val()) == 0 {
		return out, int(total.Val()), nil
	}
	pipe := e.rdb.Pipeline()
	recs := make([]*redis.MapStringStringCmd, len(ids.Val()))
	for i, id := range ids.Val() {
		recs[i] = pipe.HGetAll(ctx, alertKey(tenantID, id))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, 0, fmt.Errorf("list alerts of %s: %w", tenantID, err)
	}
	for i, cmd := range recs {
		a, err := decodeAlert(ids.Val()[i], cmd.Val())
		if err != nil {
			return nil, 0, err
		}
		out = append(out, a)
	}
	return out, int(total.Val()), nil
}

func decodeAlert(id string, rec map[string]string) (Alert, error) {
	var a Alert
	if err := json.Unmarshal([]byte(rec["raised"]), &a.AlertRaisedV1); err != nil {
		return Alert{}, fmt.Errorf("decode alert %s: %w", id, err)
	}
	a.Status = StatusActive
	if a.OneShot {
		a.Status = StatusNotice
	}
	if v := rec["resolved_at"]; v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return Alert{}, fmt.Errorf("decode alert %s: resolved_at %q: %w", id, v, err)
		}
		t := time.UnixMilli(ms).UTC()
		a.Status, a.ResolvedAt, a.Reason = StatusResolved, &t, rec["reason"]
	}
	return a, nil
}
