package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFlagEnvironment pins the CERTFLEET_* overlay. Two of its properties
// are why it is not peterbourgon/ff (see docs/libraries.md): an empty
// variable sets the flag to empty (ff skips empty variables, so
// CERTFLEET_METRICS_LISTEN= could not turn /metrics off), and every bad
// variable is reported at once (ff stops at the first).
func TestFlagEnvironment(t *testing.T) {
	cases := []struct {
		name        string
		env         map[string]string
		args        []string
		wantMetrics string
		wantConc    int
		wantErr     []string
	}{
		{name: "defaults", wantMetrics: "127.0.0.1:9465", wantConc: 64},
		{name: "environment sets a flag", env: map[string]string{"CERTFLEET_CONCURRENCY": "8"}, wantMetrics: "127.0.0.1:9465", wantConc: 8},
		{name: "command line wins over the environment", env: map[string]string{"CERTFLEET_CONCURRENCY": "8"}, args: []string{"--concurrency", "3"}, wantMetrics: "127.0.0.1:9465", wantConc: 3},
		{name: "empty variable turns metrics off", env: map[string]string{"CERTFLEET_METRICS_LISTEN": ""}, wantMetrics: "", wantConc: 64},
		{
			name:    "every bad variable is reported",
			env:     map[string]string{"CERTFLEET_CONCURRENCY": "many", "CERTFLEET_CHECK_LEGACY_TLS": "maybe"},
			wantErr: []string{"bad environment", `CERTFLEET_CONCURRENCY="many"`, `CERTFLEET_CHECK_LEGACY_TLS="maybe"`},
		},
		{name: "stray argument", args: []string{"extra"}, wantErr: []string{"unexpected arguments: [extra]"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			fs := newFlagSet("agent").redis().shards().agent().metrics("127.0.0.1:9465")
			fs.SetOutput(io.Discard)
			err := fs.parseArgs(tc.args)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("parse: got no error, want one containing %q", tc.wantErr)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("parse error: got %q, want it to contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: got %v, want nil", err)
			}
			if fs.opts.MetricsListen != tc.wantMetrics {
				t.Errorf("metrics listen: got %q, want %q", fs.opts.MetricsListen, tc.wantMetrics)
			}
			if fs.opts.Concurrency != tc.wantConc {
				t.Errorf("concurrency: got %d, want %d", fs.opts.Concurrency, tc.wantConc)
			}
		})
	}
}

// Flags whose zero or negative value would silently mean a default to the
// role's config are refused before the role connects anywhere.
func TestScanFlagsMustBePositive(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"max ips per domain zero", []string{"agent", "--max-ips-per-domain", "0"}, "--max-ips-per-domain must be positive, got 0"},
		{"max ips per domain negative", []string{"all", "--max-ips-per-domain", "-3"}, "--max-ips-per-domain must be positive, got -3"},
		{"job timeout zero", []string{"agent", "--job-timeout", "0s"}, "--job-timeout must be positive, got 0s"},
		{"claim idle zero", []string{"coordinator", "--claim-idle", "0s"}, "--claim-idle must be positive, got 0s"},
		{"claim idle negative", []string{"apiserver", "--claim-idle", "-1s"}, "--claim-idle must be positive, got -1s"},
		{"registration interval zero", []string{"coordinator", "--registration-interval", "0s"}, "--registration-interval must be at least 1s, got 0s"},
		{"registration workers zero", []string{"agent", "--registration-workers", "0"}, "--registration-workers must be positive, got 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stderr strings.Builder
			code := runMain(t.Context(), tc.args, io.Discard, &stderr)
			if code == 0 || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("got exit %d and %q, want a non-zero exit and %q", code, stderr.String(), tc.want)
			}
		})
	}
}

// TestExitCodes: a command line that cannot run exits 2 with one short
// line naming the problem (not the flag package's dump of every flag);
// asking for help or the version exits 0.
func TestExitCodes(t *testing.T) {
	cases := []struct {
		args      []string
		code      int
		firstLine string
	}{
		{[]string{"coordinator", "--scan-interval", "x"}, 2, `certfleet coordinator: --scan-interval "x": not a duration; use a number with a unit, such as 90s, 15m or 12h`},
		{[]string{"agent", "--check-legacy-tls=maybe"}, 2, `certfleet agent: --check-legacy-tls "maybe": not a boolean; use true or false`},
		{[]string{"agent", "--concurrency", "many"}, 2, `certfleet agent: --concurrency "many": not a whole number`},
		{[]string{"agent", "--no-such-flag"}, 2, "certfleet agent: flag provided but not defined: -no-such-flag"},
		{[]string{"agent", "stray"}, 2, "certfleet agent: unexpected arguments: [stray]"},
		{[]string{"apikey"}, 2, "certfleet apikey: usage: certfleet apikey create"},
		{[]string{"views"}, 2, "certfleet views: usage: certfleet views rebuild [flags]"},
		{[]string{"nonsense"}, 2, `certfleet: unknown command "nonsense"`},
		{[]string{"agent", "-h"}, 0, "usage: certfleet agent [flags]"},
		{[]string{"version"}, 0, "certfleet "},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out strings.Builder
			code := runMain(t.Context(), tc.args, &out, &out)
			first, _, _ := strings.Cut(out.String(), "\n")
			if code != tc.code || !strings.HasPrefix(first, tc.firstLine) {
				t.Errorf("got exit %d, first line %q; want exit %d, %q", code, first, tc.code, tc.firstLine)
			}
			if tc.code == 2 && strings.Count(out.String(), "\n") > 6 {
				t.Errorf("usage error output is %d lines, want a short message:\n%s", strings.Count(out.String(), "\n"), out.String())
			}
		})
	}
}

// TestConfigFile: a config file sets flags by their names; the
// environment and the command line win over it; a bad line is a usage
// error naming the line.
func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.conf", "# agent settings\nconcurrency = 9\nregion = \"eu-west\"\n\nmetrics-listen = 127.0.0.1:1\n")
	fs := newFlagSet("agent").redis().shards().agent().metrics("127.0.0.1:9465")
	if err := fs.parseArgs([]string{"--config", good}); err != nil {
		t.Fatal(err)
	}
	if fs.opts.Concurrency != 9 || fs.opts.Region != "eu-west" || fs.opts.MetricsListen != "127.0.0.1:1" {
		t.Errorf("from the file: got %d %q %q", fs.opts.Concurrency, fs.opts.Region, fs.opts.MetricsListen)
	}
	t.Setenv("CERTFLEET_CONCURRENCY", "7")
	t.Setenv("CERTFLEET_CONFIG", good)
	fs = newFlagSet("agent").redis().shards().agent().metrics("127.0.0.1:9465")
	if err := fs.parseArgs([]string{"--region", "us-east"}); err != nil {
		t.Fatal(err)
	}
	if fs.opts.Concurrency != 7 || fs.opts.Region != "us-east" || fs.opts.MetricsListen != "127.0.0.1:1" {
		t.Errorf("environment and flags over the file: got %d %q %q", fs.opts.Concurrency, fs.opts.Region, fs.opts.MetricsListen)
	}
	bad := write("bad.conf", "concurrency = many\nno-such = 1\njust words\n")
	var out strings.Builder
	code := runMain(t.Context(), []string{"agent", "--config", bad}, &out, &out)
	for _, want := range []string{"line 1: concurrency", "not a whole number", `line 2: certfleet agent has no setting "no-such"`, "line 3: want name = value"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("bad file: output %q lacks %q", out.String(), want)
		}
	}
	if code != 2 {
		t.Errorf("bad file: got exit %d, want 2", code)
	}
}
