package events

import (
	"fmt"
	"slices"
	"testing"
)

// TestEventStreamPartitions: every tenant's stream is one of EventStreams,
// carries the tenant's tag, and the tags spread tenants over every
// partition; the partition of a tenant never changes (it is stored data).
func TestEventStreamPartitions(t *testing.T) {
	streams := EventStreams()
	if len(streams) != EventPartitions+1 || streams[len(streams)-1] != CAStream {
		t.Fatalf("EventStreams: got %v, want %d partitions and %s", streams, EventPartitions, CAStream)
	}
	seen := map[string]bool{}
	for i := range 1000 {
		tenant := TenantID(fmt.Sprintf("user%d@example.com", i))
		s := EventStream(tenant)
		if !slices.Contains(streams, s) {
			t.Fatalf("EventStream(%s) = %s: not in EventStreams", tenant, s)
		}
		if want := StreamEvents + ":" + TenantTag(tenant); s != want {
			t.Fatalf("EventStream(%s): got %s, want %s", tenant, s, want)
		}
		seen[s] = true
	}
	if len(seen) != EventPartitions {
		t.Errorf("1000 tenants: got %d partitions used, want %d", len(seen), EventPartitions)
	}
	tests := []struct{ tenant, want string }{
		{"", "{t05}"},
		{"tenant-a", "{t11}"},
	}
	for _, tt := range tests {
		t.Run(tt.tenant, func(t *testing.T) {
			if got := TenantTag(tt.tenant); got != tt.want {
				t.Errorf("TenantTag(%q): got %s, want %s (a tenant's partition must never move)", tt.tenant, got, tt.want)
			}
		})
	}
}
