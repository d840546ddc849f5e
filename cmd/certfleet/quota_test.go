package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/apiserver"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/testenv"
)

// TestQuotaShowMatchesServer: `certfleet quota show` without --quota-*
// flags prints, for every resource, the limit GET /api/v1/quotas answers
// from an API server on its defaults; after `quota set` and `quota clear`
// too, which print the same table.
func TestQuotaShowMatchesServer(t *testing.T) {
	ctx := context.Background()
	redisSrv := testenv.Redis(t)
	srv, err := apiserver.New(apiserver.Config{}, redisSrv.Client(t), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	cli := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := runMain(ctx, append(args, "--redis-url", redisSrv.URL, "--log-level", "warn"), &out, &errOut); code != 0 {
			t.Fatalf("%v: exit %d, stderr %s", args, code, errOut.String())
		}
		return out.String()
	}
	created := cli("apikey", "create", "--email", "ops@example.com", "--label", "t", "--scopes", "read")
	key := regexp.MustCompile(`(?m)^key: +(ssa_\w+)$`).FindStringSubmatch(created)[1]
	server := func() map[string]string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, hs.URL+"/api/v1/quotas", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]struct{ Limit *int64 }
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for r, q := range body {
			out[r] = "unlimited"
			if q.Limit != nil {
				out[r] = fmt.Sprint(*q.Limit)
			}
		}
		return out
	}
	table := func(out string) map[string]string {
		t.Helper()
		got := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
			f := strings.Fields(line)
			got[f[0]] = f[1] + " " + f[2]
		}
		return got
	}
	check := func(name, out string, account map[string]bool) {
		t.Helper()
		got, want := table(out), server()
		if len(got) != len(quota.Resources) || len(want) != len(quota.Resources) {
			t.Errorf("%s: got %d rows from the CLI and %d from the server, want %d", name, len(got), len(want), len(quota.Resources))
		}
		for _, r := range quota.Resources {
			src := "default"
			if account[string(r)] {
				src = "account"
			}
			if w := want[string(r)] + " " + src; got[string(r)] != w {
				t.Errorf("%s: %s got %q, want %q (the server's limit)", name, r, got[string(r)], w)
			}
		}
	}
	check("show", cli("quota", "show", "--email", "ops@example.com"), nil)
	check("set", cli("quota", "set", "--email", "ops@example.com", "--client-certificates", "7"), map[string]bool{"client_certificates": true})
	check("clear", cli("quota", "clear", "--email", "ops@example.com", "--client-certificates"), nil)
	if got := table(cli("quota", "show", "--email", "ops@example.com", "--quota-managed-certificates", "3"))["managed_certificates"]; got != "3 default" {
		t.Errorf("show with the server's --quota-managed-certificates 3: got %q, want 3 default", got)
	}
}

// TestQuotaSetNamesEveryResource: quota set with nothing to set names
// every resource's flag.
func TestQuotaSetNamesEveryResource(t *testing.T) {
	redisSrv := testenv.Redis(t)
	var out, errOut bytes.Buffer
	code := runMain(context.Background(), []string{"quota", "set", "--email", "ops@example.com", "--redis-url", redisSrv.URL, "--log-level", "warn"}, &out, &errOut)
	for _, r := range quota.Resources {
		if flag := "--" + strings.ReplaceAll(string(r), "_", "-"); code == 0 || !strings.Contains(errOut.String(), flag) {
			t.Errorf("quota set with nothing: exit %d, stderr %q, want it to name %s", code, errOut.String(), flag)
		}
	}
}
