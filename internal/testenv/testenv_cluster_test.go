package testenv

import (
	"context"
	"strings"
	"testing"
)

// A cluster of three spreads keys over its nodes, and refuses what spans
// slots, as a production cluster does.
func TestRedisClusterOf(t *testing.T) {
	c := RedisClusterOf(t, 3)
	cc := c.Client(t)
	ctx := context.Background()
	owners := map[string]bool{}
	for _, k := range []string{"{a}x", "{b}x", "{c}x", "{d}x", "{e}x", "{f}x", "{g}x", "{h}x"} {
		if err := cc.Set(ctx, k, "1", 0).Err(); err != nil {
			t.Fatalf("set %s: %v", k, err)
		}
		n, err := cc.MasterForKey(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		owners[n.Options().Addr] = true
	}
	if len(owners) < 2 {
		t.Errorf("8 keys of different tags all on %v, want them spread over the nodes", owners)
	}
	if err := cc.Do(ctx, "MGET", "{a}x", "{b}x").Err(); err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Errorf("MGET over two slots: got %v, want CROSSSLOT", err)
	}
	if !strings.Contains(c.URL, "addr=") {
		t.Errorf("url %q names one node", c.URL)
	}
}
