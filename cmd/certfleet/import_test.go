package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/certfleet/certfleet/apiserver"
	"github.com/certfleet/certfleet/internal/testenv"
)

// TestImportCommand: certfleet import posts a CSV file in chunks to a
// running server; interrupted (the server refuses the third chunk), it
// stops with the acknowledged line recorded, and run again with the same
// --resume file it imports the rest; run again from the start, every
// domain is already there and nothing is added twice.
func TestImportCommand(t *testing.T) {
	ctx := context.Background()
	redisSrv := testenv.Redis(t)
	srv, err := apiserver.New(apiserver.Config{RateLimitGeneral: 1_000_000}, redisSrv.Client(t), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	var bulkCalls, failAt atomic.Int64
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/domains/bulk" && bulkCalls.Add(1) == failAt.Load() {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":"injected failure"}`)
			return
		}
		srv.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		var out, errOut bytes.Buffer
		code := runMain(ctx, args, &out, &errOut)
		return code, out.String(), errOut.String()
	}
	code, out, stderr := cli("apikey", "create", "--log-level", "warn", "--redis-url", redisSrv.URL, "--email", "ops@example.com", "--label", "import", "--scopes", "read,write")
	if code != 0 {
		t.Fatalf("apikey create: exit %d: %s", code, stderr)
	}
	key := regexp.MustCompile(`ssa_\w{32}`).FindString(out)

	dir := t.TempDir()
	file, state := filepath.Join(dir, "domains.csv"), filepath.Join(dir, "import.state")
	var csv strings.Builder
	csv.WriteString("host,port,notes,tags\n")
	for i := range 25 {
		fmt.Fprintf(&csv, "site-%d.example.com,%d,\"note, %d\",web;prod\n", i, 443+i%2, i)
	}
	if err := os.WriteFile(file, []byte(csv.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	importArgs := []string{"import", "--log-level", "warn", "--api", hs.URL, "--api-key", key, "--chunk", "10", "--resume", state, file}

	failAt.Store(3)
	code, _, stderr = cli(importArgs...)
	if code != 1 || !strings.Contains(stderr, "injected failure") || !strings.Contains(stderr, "acknowledged up to line 21") {
		t.Fatalf("interrupted import: got exit %d, stderr %s; want 1 naming the failure and line 21", code, stderr)
	}
	if !strings.Contains(stderr, "line 11 of 26: 10 created") || !strings.Contains(stderr, "line 21 of 26: 20 created") {
		t.Errorf("progress: got %s, want a line per chunk", stderr)
	}
	var st importState
	raw, _ := os.ReadFile(state)
	if err := json.Unmarshal(raw, &st); err != nil || st.Line != 21 {
		t.Fatalf("state after the interruption: got %s (%v), want line 21", raw, err)
	}

	code, out, stderr = cli(importArgs...)
	if code != 0 || !strings.Contains(stderr, "resuming "+file+" after line 21") || !strings.Contains(out, "5 created, 0 already monitored, 0 refused") {
		t.Fatalf("resumed import: got exit %d, stdout %s, stderr %s; want the last 5 created", code, out, stderr)
	}

	// From the start again (no state): everything exists, nothing doubles.
	code, out, stderr = cli("import", "--log-level", "warn", "--api", hs.URL, "--api-key", key, "--chunk", "7", file)
	if code != 0 || !strings.Contains(out, "0 created, 25 already monitored, 0 refused") {
		t.Fatalf("repeated import: got exit %d, stdout %s, stderr %s; want 25 already monitored", code, out, stderr)
	}
	req, _ := http.NewRequest(http.MethodGet, hs.URL+"/api/v1/domains?per_page=100&search=site-7.", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Data []struct {
			Hostname, Notes string
			Port            int
			Tags            []string
		}
		Pagination struct{ Total int }
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	if list.Pagination.Total != 1 || list.Data[0].Hostname != "site-7.example.com" || list.Data[0].Port != 444 ||
		list.Data[0].Notes != "note, 7" || strings.Join(list.Data[0].Tags, ",") != "web,prod" {
		t.Errorf("site-7: got %+v, want one domain with port 444, its notes and tags", list)
	}
}

// TestImportNDJSONErrors: refused lines are named with their line number
// and reason, the others land, and the exit status is 1.
func TestImportNDJSONErrors(t *testing.T) {
	ctx := context.Background()
	redisSrv := testenv.Redis(t)
	srv, err := apiserver.New(apiserver.Config{}, redisSrv.Client(t), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	var out, errOut bytes.Buffer
	if code := runMain(ctx, []string{"apikey", "create", "--log-level", "warn", "--redis-url", redisSrv.URL, "--email", "nd@example.com", "--label", "l", "--scopes", "read,write"}, &out, &errOut); code != 0 {
		t.Fatalf("apikey create: %s", errOut.String())
	}
	key := regexp.MustCompile(`ssa_\w{32}`).FindString(out.String())
	file := filepath.Join(t.TempDir(), "domains.ndjson")
	body := "{\"hostname\":\"a.example.com\"}\n\n{\"hostname\":\"b.example.com\",\"port\":0}\n{not json\n{\"hostname\":\"c.example.com\"}\n"
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errOut.Reset()
	t.Setenv("CERTFLEET_API_KEY", key)
	code := runMain(ctx, []string{"import", "--log-level", "warn", "--api", hs.URL, file}, &out, &errOut)
	if code != 1 || !strings.Contains(out.String(), "2 created, 0 already monitored, 2 refused") {
		t.Fatalf("got exit %d, stdout %s, stderr %s; want 1 with 2 created and 2 refused", code, out.String(), errOut.String())
	}
	for _, want := range []string{"line 3: domain: port must be from 1 to 65535, got 0", "line 4: domain: item is not valid JSON"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("stderr: got %s, want %q", errOut.String(), want)
		}
	}
}

// TestImportSkipsBOM: a file that starts with a UTF-8 byte order mark, as
// spreadsheet exports write it, reads as the same file without it, quoted
// CSV header included; only the one leading mark is skipped.
func TestImportSkipsBOM(t *testing.T) {
	read := func(readFn func(io.Reader, func(importRecord) error) error, text string) ([]string, error) {
		var got []string
		err := readFn(skipBOM(strings.NewReader(text)), func(r importRecord) error {
			got = append(got, fmt.Sprintf("%d %s", r.line, r.obj))
			return nil
		})
		return got, err
	}
	for _, tc := range []struct {
		name   string
		readFn func(io.Reader, func(importRecord) error) error
		text   string
		want   []string
	}{
		{"csv", readCSV, "\ufeffhostname,port\na.example,8443\n", []string{`2 {"hostname":"a.example","port":8443}`}},
		{"quoted csv", readCSV, "\ufeff\"hostname\",\"port\"\r\n\"a.example\",\"8443\"\r\n", []string{`2 {"hostname":"a.example","port":8443}`}},
		{"ndjson", readNDJSON, "\ufeff{\"hostname\":\"a.example\"}\n{\"hostname\":\"b.example\"}\n",
			[]string{`1 {"hostname":"a.example"}`, `2 {"hostname":"b.example"}`}},
		{"no mark", readNDJSON, "{\"hostname\":\"a.example\"}", []string{`1 {"hostname":"a.example"}`}},
		{"two marks", readNDJSON, "\ufeff\ufeff{}", []string{"1 \ufeff{}"}},
		{"only a mark", readNDJSON, "\ufeff", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := read(tc.readFn, tc.text)
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q, %v, want %q", got, err, tc.want)
			}
		})
	}
}
