package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/agent/lab"
	"github.com/certfleet/certfleet/internal/testenv"
)

// TestScanCommand scans the lab once, with no Redis or ClickHouse: what
// each address serves, and an exit status that fails on what is wrong.
func TestScanCommand(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fleet, err := lab.Start(ctx, lab.Config{}, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	dir := t.TempDir()
	rootsPath := filepath.Join(dir, "roots.pem")
	if err := fleet.WriteEnv(filepath.Join(dir, "lab.env"), rootsPath); err != nil {
		t.Fatal(err)
	}
	domain := map[string]string{}
	for _, tg := range fleet.Targets() {
		domain[tg.Name] = tg.Domain
	}
	scan := func(args ...string) (int, string, string) {
		var out, errOut strings.Builder
		base := []string{"scan", "--resolver", fleet.ResolverAddr(), "--extra-roots", rootsPath,
			"--allow-targets", "127.0.0.0/8,::1/128", "--check-legacy-tls=false", "--log-level", "error"}
		code := runMain(ctx, append(base, args...), &out, &errOut)
		return code, out.String(), errOut.String()
	}

	code, out, errOut := scan(domain["valid"])
	if code != 0 || !strings.Contains(out, "ok") || strings.Count(out, "\n") != 3 {
		t.Errorf("valid: got exit %d\n%s%s\nwant 0 and a header plus one line per address (IPv4, IPv6)", code, out, errOut)
	}
	tests := []struct {
		name, problem string
	}{
		{"expired", "expired"},
		{"expiring-soon", "expires in 9 days (--min-days 14)"},
		{"self-signed", "chain not trusted"},
		{"wrong-name", "wrong name"},
		{"nxdomain", "nxdomain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := scan("--json", domain[tt.name])
			var rs []scanResult
			if err := json.Unmarshal([]byte(out), &rs); err != nil {
				t.Fatalf("json: %v\n%s%s", err, out, errOut)
			}
			if code != 1 || len(rs) == 0 || !strings.Contains(strings.Join(rs[0].Problems, ";"), tt.problem) {
				t.Errorf("got exit %d, results %+v; want 1 and a problem %q", code, rs, tt.problem)
			}
		})
	}
	// --min-days moves the line; no host is a usage error.
	if code, out, _ := scan("--min-days", "5", domain["expiring-soon"]); code != 0 {
		t.Errorf("expiring in 9 days with --min-days 5: got exit %d\n%s", code, out)
	}
	if code, _, errOut := scan(); code != 2 || !strings.Contains(errOut, "name at least one HOST") {
		t.Errorf("no host: got exit %d %q, want 2", code, errOut)
	}
	if code, _, _ := scan("https://example.com/"); code != 2 {
		t.Errorf("a URL: got exit %d, want 2", code)
	}
}
