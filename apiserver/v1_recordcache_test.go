package apiserver

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/internal/testenv"
)

// raceHook counts the list scripts a client runs and, once armed, changes
// a domain record right after one (as an update landing between a page's
// script and its records' read would).
type raceHook struct {
	lists atomic.Int64
	armed atomic.Bool
	race  func()
}

func (h *raceHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *raceHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h *raceHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		// A script's first EVALSHA fails (NOSCRIPT) and go-redis sends it
		// again as EVAL: only a script that ran counts.
		if err == nil && strings.HasPrefix(cmd.Name(), "eval") && len(cmd.Args()) > 3 {
			if k, _ := cmd.Args()[3].(string); strings.HasSuffix(k, ":ix:created") {
				h.lists.Add(1)
				if h.armed.CompareAndSwap(true, false) {
					h.race()
				}
			}
		}
		return err
	}
}

// A record that changes between a list page's script and the read of the
// records it does not keep lists the page again, and the page shows the
// record as it is after the change; an unchanged page is one script.
func TestDomainListRecordChanged(t *testing.T) {
	ctx := context.Background()
	redisSrv := testenv.Redis(t)
	rdb := redisSrv.Client(t)
	hook := &raceHook{}
	client := redisSrv.Client(t)
	client.AddHook(hook)
	srv, err := New(domainsConfig, client, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	tenant, err := srv.accounts.EnsureAccount(ctx, "race@example.com")
	if err != nil {
		t.Fatal(err)
	}
	k, err := srv.accounts.CreateKey(ctx, tenant, "race", []string{accounts.ScopeRead, accounts.ScopeWrite}, nil, accounts.SourceCLI)
	if err != nil {
		t.Fatal(err)
	}
	d, _, err := srv.accounts.AddDomain(ctx, tenant, accounts.NewDomain{Host: "race.example", Port: 443, Notes: "before"})
	if err != nil {
		t.Fatal(err)
	}
	// The update through the store, on a client without the hook: it
	// moves the record's rev and the tenant's record generation.
	store, err := accounts.New(accounts.Config{}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	hook.race = func() {
		raced := "raced"
		if _, err := store.UpdateDomain(ctx, tenant, d.ID, accounts.DomainPatch{Notes: &raced}); err != nil {
			t.Error(err)
		}
	}
	list := func() string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, hs.URL+"/api/v1/domains", nil)
		req.Header.Set("Authorization", "Bearer "+k.Key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("list: %d %s", resp.StatusCode, b)
		}
		return string(b)
	}
	hook.armed.Store(true)
	body := list()
	if n := hook.lists.Load(); n != 2 || !strings.Contains(body, `"notes":"raced"`) {
		t.Fatalf("a record changed under the first page: %d list scripts, page %s; want 2 and the raced notes", n, body)
	}
	hook.lists.Store(0)
	if body := list(); hook.lists.Load() != 1 || !strings.Contains(body, `"notes":"raced"`) {
		t.Fatalf("an unchanged page: %d list scripts, page %s; want 1", hook.lists.Load(), body)
	}
}
