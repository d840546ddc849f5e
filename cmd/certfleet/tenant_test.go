package main

import (
	"context"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/internal/testenv"
)

// certfleet tenant delete refuses without --yes when nobody can confirm,
// prints what it removed, says so when run again, and fails for an email
// that never had an account.
func TestTenantDeleteCommand(t *testing.T) {
	ctx := context.Background()
	redisSrv := testenv.Redis(t)
	ch := testenv.ClickHouse(t)
	stdinInteractive = func() bool { return false }
	run := func(args ...string) (int, string, string) {
		t.Helper()
		var out, errOut strings.Builder
		extra := []string{"--redis-url", redisSrv.URL, "--log-level", "warn"}
		if args[0] == "tenant" {
			extra = append(extra, "--clickhouse-dsn", ch.DSN, "--consumer-wait", "100ms")
		}
		code := runMain(ctx, append(args, extra...), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	if code, out, errOut := run("apikey", "create", "--email", "leaver@example.org", "--label", "ci"); code != 0 {
		t.Fatalf("apikey create: exit %d, %s %s", code, out, errOut)
	}
	if code, _, errOut := run("tenant", "delete", "--email", "leaver@example.org"); code != 2 || !strings.Contains(errOut, "without --yes") {
		t.Fatalf("without --yes: exit %d, err %q", code, errOut)
	}
	code, out, errOut := run("tenant", "delete", "--email", "leaver@example.org", "--yes")
	if code != 0 || !strings.Contains(out, "deleted account leaver@example.org") || !strings.Contains(out, "api_keys") ||
		!strings.Contains(out, "account ") || !strings.Contains(out, "DELETE issued on events, scan_results, audit_log") ||
		!strings.Contains(out, "recorded tenant.deleted.v1") {
		t.Fatalf("delete: exit %d, out:\n%s\nerr: %s", code, out, errOut)
	}
	if code, _, errOut := run("tenant", "delete", "--email", "nobody@example.org", "--yes"); code != 1 || !strings.Contains(errOut, "no such account") {
		t.Errorf("unknown email: exit %d, err %q", code, errOut)
	}
	if code, _, _ := run("tenant", "delete", "--yes"); code != 2 {
		t.Errorf("without --email: exit %d, want 2", code)
	}
}
