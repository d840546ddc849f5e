package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/apiserver"
	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/printable"
	"github.com/certfleet/certfleet/internal/testenv"
)

// TestAPIKeyCommand: a key made by the CLI works over HTTP, is listed, and
// stops working once revoked by the CLI.
func TestAPIKeyCommand(t *testing.T) {
	ctx := context.Background()
	redisSrv := testenv.Redis(t)
	srv, err := apiserver.New(apiserver.Config{}, redisSrv.Client(t), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		var out, errOut bytes.Buffer
		code := runMain(ctx, append(args, "--redis-url", redisSrv.URL, "--log-level", "warn"), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	get := func(key string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, hs.URL+"/api/v1/api-keys", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	code, out, stderr := cli("apikey", "create", "--email", "ops@example.com", "--label", "operator", "--scopes", "read,write",
		"--expires-at", "2999-01-01T00:00:00Z")
	if code != 0 {
		t.Fatalf("create: exit %d, stderr %s", code, stderr)
	}
	m := regexp.MustCompile(`(?m)^id: +(\S+)\nkey: +(ssa_\w{32})\npermissions: +read,write\n$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("create: got output %q, want id, key and permissions", out)
	}
	id, key := m[1], m[2]
	if !strings.Contains(stderr, "shown only this once") {
		t.Errorf("create: got stderr %q, want the shown-once warning", stderr)
	}
	if got := get(key); got != http.StatusOK {
		t.Fatalf("use the key: got HTTP %d, want 200", got)
	}

	code, out, stderr = cli("apikey", "list", "--email", "ops@example.com")
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, key[:8]) || strings.Contains(out, key) ||
		!strings.Contains(out, "2999-01-01T00:00:00Z") {
		t.Errorf("list: exit %d, got %q (stderr %s), want the key's id, prefix and expiry, not the key", code, out, stderr)
	}

	if code, out, stderr := cli("apikey", "revoke", "--email", "other@example.com", "--id", id); code != 1 || !strings.Contains(stderr, "API key not found") {
		t.Errorf("revoke by another account: exit %d, out %q, stderr %q, want 1 and not found", code, out, stderr)
	}
	if code, out, stderr := cli("apikey", "revoke", "--email", "ops@example.com", "--id", id); code != 0 || out != "revoked "+id+"\n" {
		t.Fatalf("revoke: exit %d, out %q, stderr %q", code, out, stderr)
	}
	if got := get(key); got != http.StatusUnauthorized {
		t.Errorf("use the revoked key: got HTTP %d, want 401", got)
	}

	bad := []struct {
		name     string
		args     []string
		wantCode int // 2: the command line cannot run; 1: the store refused
		wantErr  string
	}{
		{"no action", []string{"apikey"}, 2, "usage: certfleet apikey"},
		{"unknown action", []string{"apikey", "rotate"}, 2, "usage: certfleet apikey"},
		{"no email", []string{"apikey", "list"}, 2, "--email is required"},
		{"bad email", []string{"apikey", "list", "--email", "ops"}, 2, "invalid email"},
		{"no label", []string{"apikey", "create", "--email", "ops@example.com"}, 1, "label must be"},
		{"bad scope", []string{"apikey", "create", "--email", "ops@example.com", "--label", "x", "--scopes", "read,admin"}, 1, "permissions must be"},
		{"bad expiry", []string{"apikey", "create", "--email", "ops@example.com", "--label", "x", "--expires-at", "next year"}, 2, "--expires-at"},
		{"no id", []string{"apikey", "revoke", "--email", "ops@example.com"}, 2, "--id is required"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := cli(tc.args...)
			if code != tc.wantCode || !strings.Contains(stderr, tc.wantErr) {
				t.Errorf("got exit %d stderr %q, want %d mentioning %q", code, stderr, tc.wantCode, tc.wantErr)
			}
		})
	}
}

// TestTablesEscapeControlCharacters: text stored before the checks existed
// (a key's label) or taken from a scanned certificate (its issuer) is
// shown escaped: one line of the table, no escape sequence reaching the
// terminal, no forged row.
func TestTablesEscapeControlCharacters(t *testing.T) {
	const hostile = "x\x1b]0;pwned\a\x1b[2J\nfake: row\u009b31m"
	const shown = `x\x1b]0;pwned\x07\x1b[2J\nfake: row\u009b31m`
	var keys bytes.Buffer
	if err := printKeys(&keys, []accounts.APIKey{{ID: "k1", Kind: accounts.KindAPI, Prefix: "ssa_abcd", Label: hostile,
		Scopes: []string{"read"}, CreatedAt: time.Unix(0, 0)}}); err != nil {
		t.Fatal(err)
	}
	var scan bytes.Buffer
	printScan(&scan, []scanResult{{Host: "example.com", Port: 443, Problems: []string{"issuer " + hostile},
		IPResult: events.IPResult{IP: "192.0.2.1", Issuer: hostile}}})
	for name, out := range map[string]string{"apikey list": keys.String(), "scan": scan.String()} {
		if strings.ContainsFunc(out, func(r rune) bool { return r != '\n' && printable.IsControl(r) }) {
			t.Errorf("%s: got %q, want no control character but line ends", name, out)
		}
		if lines := strings.Count(out, "\n"); lines != 2 {
			t.Errorf("%s: got %d lines in %q, want 2 (header and one row)", name, lines, out)
		}
		if !strings.Contains(out, shown) {
			t.Errorf("%s: got %q, want the text escaped as %q", name, out, shown)
		}
	}
}

// TestResultCommandsLogQuietly: a command that prints its result logs
// only warnings and errors unless asked, so `KEY=$(certfleet apikey create
// ...)` shows no log line; --log-level info brings them back. Roles log
// at info.
func TestResultCommandsLogQuietly(t *testing.T) {
	redisSrv := testenv.Redis(t)
	run := func(extra ...string) (string, string) {
		t.Helper()
		var out, errOut bytes.Buffer
		args := append([]string{"apikey", "create", "--redis-url", redisSrv.URL, "--email", "quiet@example.com", "--label", "ci"}, extra...)
		if code := runMain(context.Background(), args, &out, &errOut); code != 0 {
			t.Fatalf("apikey create %v: exit %d, stderr %s", extra, code, errOut.String())
		}
		return out.String(), errOut.String()
	}
	out, stderr := run()
	if stderr != "the key is shown only this once: store it now\n" || !strings.Contains(out, "key:") {
		t.Errorf("apikey create: got stderr %q, want only the shown-once line", stderr)
	}
	if _, stderr = run("--log-level", "info"); !strings.Contains(stderr, `"msg":"api key created"`) {
		t.Errorf("apikey create --log-level info: got stderr %q, want the info log line", stderr)
	}
	for _, tc := range []struct{ cmd, want string }{
		{"apikey create", "warn"}, {"ca show", "warn"}, {"quota show", "warn"}, {"regions list", "warn"}, {"tenant delete", "warn"},
		{"scan", "warn"}, {"import", "warn"}, {"all", "info"}, {"apiserver", "info"}, {"agent", "info"}, {"lab", "info"}, {"migrate", "info"},
	} {
		if got := newFlagSet(tc.cmd).Lookup("log-level").DefValue; got != tc.want {
			t.Errorf("%s --log-level default: got %s, want %s", tc.cmd, got, tc.want)
		}
	}
}
