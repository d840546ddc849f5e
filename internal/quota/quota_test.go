package quota

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func TestOverrides(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	defaults := Limits{Domains: 10}.With(Defaults)
	if err := Set(ctx, rdb, "t1", Limits{Domains: 5, APIKeys: 0}); err != nil {
		t.Fatal(err)
	}
	eff, err := Effective(ctx, rdb, "t1", defaults)
	if err != nil {
		t.Fatal(err)
	}
	if eff[Domains] != 5 || eff[APIKeys] != 0 || eff[Channels] != Defaults[Channels] {
		t.Fatalf("effective: got %v", eff)
	}
	if other, _ := Effective(ctx, rdb, "t2", defaults); other[Domains] != 10 {
		t.Fatalf("another tenant: got %v, want the defaults", other)
	}
	if err := Clear(ctx, rdb, "t1", Domains); err != nil {
		t.Fatal(err)
	}
	if eff, _ := Effective(ctx, rdb, "t1", defaults); eff[Domains] != 10 || eff[APIKeys] != 0 {
		t.Fatalf("after clear: got %v", eff)
	}
	if err := Set(ctx, rdb, "t1", Limits{Domains: -1}); err == nil {
		t.Fatal("negative limit: got nil, want an error")
	}
	if err := Set(ctx, rdb, "t1", Limits{"bogus": 1}); !errors.Is(err, ErrUnknownResource) {
		t.Fatalf("unknown resource: got %v", err)
	}
	if err := rdb.HSet(ctx, Key("t3"), "domains", "many").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := Effective(ctx, rdb, "t3", defaults); err == nil {
		t.Fatal("a corrupt override: got nil, want an error")
	}
}

func TestGate(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	g := NewGate(rdb, Limits{InFlight: 2})
	now := time.Unix(0, 0)
	g.now = func() time.Time { return now }
	r1, err := g.Enter(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := g.Enter(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	var ex *Exceeded
	if _, err := g.Enter(ctx, "t1"); !errors.As(err, &ex) || ex.Limit != 2 {
		t.Fatalf("third in flight: got %v, want Exceeded{2}", err)
	}
	if r, err := g.Enter(ctx, "t2"); err != nil {
		t.Fatalf("another tenant: %v", err)
	} else {
		r()
	}
	r1()
	r1() // a second release changes nothing
	r3, err := g.Enter(ctx, "t1")
	if err != nil {
		t.Fatalf("after a release: %v", err)
	}
	if _, err := g.Enter(ctx, "t1"); err == nil {
		t.Fatal("double release freed two slots")
	}
	// An override applies once the cached limit is older than CacheFor.
	if err := Set(ctx, rdb, "t1", Limits{InFlight: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Enter(ctx, "t1"); err == nil {
		t.Fatal("override applied before the cache expired")
	}
	now = now.Add(CacheFor)
	r4, err := g.Enter(ctx, "t1")
	if err != nil {
		t.Fatalf("override 3 after the cache expired: %v", err)
	}
	r2()
	r3()
	r4()
	if len(g.counts) != 0 {
		t.Fatalf("counts after every release: got %v, want empty", g.counts)
	}
}

// TestParseResourceNamesEveryResource: the error of an unknown resource
// lists every one there is.
func TestParseResourceNamesEveryResource(t *testing.T) {
	_, err := ParseResource("bogus")
	if !errors.Is(err, ErrUnknownResource) {
		t.Fatalf("got %v, want ErrUnknownResource", err)
	}
	for _, r := range Resources {
		if !strings.Contains(err.Error(), string(r)) {
			t.Errorf("got %q, want it to name %s", err, r)
		}
	}
}

// A counting script's answer over a limit reads as the resource it names,
// or the caller's when it names none; any other answer is not over one.
func TestScriptExceeded(t *testing.T) {
	for _, tc := range []struct {
		answer string
		want   *Exceeded
	}{
		{"quota:50", &Exceeded{Resource: Channels, Limit: 50}},
		{"quota:held_api_keys:5", &Exceeded{Resource: HeldAPIKeys, Limit: 5}},
		{"ok", nil},
		{"created", nil},
	} {
		got := ScriptExceeded(tc.answer, Channels)
		if (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want {
			t.Errorf("ScriptExceeded(%q): got %+v, want %+v", tc.answer, got, tc.want)
		}
	}
}
