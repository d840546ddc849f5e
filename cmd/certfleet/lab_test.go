package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/agent/lab"
)

// TestLabCommand runs `certfleet lab --write-env` and checks that what it
// prints and writes names the registries an agent must be given.
func TestLabCommand(t *testing.T) {
	dir := t.TempDir()
	env := filepath.Join(dir, "lab.env")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- runMain(ctx, []string{"lab", "--write-env", env, "--forward", "none", "--log-level", "error"}, &out, &errOut)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(env); err == nil {
			break
		}
		select {
		case code := <-done:
			t.Fatalf("lab exited with %d before writing %s: %s", code, env, errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 30s", env)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("lab: exit %d: %s", code, errOut.String())
	}
	b, err := os.ReadFile(env)
	if err != nil {
		t.Fatal(err)
	}
	bootstrap := filepath.Join(dir, lab.BootstrapFile)
	for _, want := range []string{"CERTFLEET_RDAP_BOOTSTRAP=" + bootstrap + "\n", "CERTFLEET_WHOIS_SERVER='test=127.0.0.1:"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("env file: got %s, want a line with %q", b, want)
		}
	}
	if _, err := os.Stat(bootstrap); err != nil {
		t.Errorf("bootstrap file: %v", err)
	}
	for _, want := range []string{"--rdap-bootstrap " + bootstrap + " --whois-server test=127.0.0.1:", ",example=127.0.0.1:",
		"reg-whois-only", "certfleet-whois-only.example", "no-expiry over rdap", "after a 429"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output: got\n%s\nwant it to contain %q", out.String(), want)
		}
	}
}

func TestLabForward(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"none", nil},
		{"", nil},
		{"127.0.0.1:5353", []string{"127.0.0.1:5353"}},
		{" 127.0.0.1:5353, [::1]:53 ,", []string{"127.0.0.1:5353", "[::1]:53"}},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := labForward(tc.in)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("got %v, %v, want %v", got, err, tc.want)
			}
		})
	}
}
