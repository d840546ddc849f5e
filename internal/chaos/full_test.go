package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// send sends a JSON request to the API with a bearer key (none when
// empty) and returns the status, the Retry-After header and the body.
func (f *fleet) send(key, method, path string, body any) (int, string, string) {
	f.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, f.api+path, rd)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), string(b)
}

// TestRedisFull fills Redis to its maxmemory (noeviction) under load:
// every API write answers 503 with Retry-After, in its API's style and
// saying why, never a bare 500; no request leaves part of a record; the
// roles ride it out, and once memory is back nothing acknowledged is lost.
func TestRedisFull(t *testing.T) {
	s := suite(t)
	f := newFleet(t, s)
	ctx := context.Background()
	tn := f.newTenant()
	id := f.add(tn, f.lab.Targets()[0].Domain)
	id2 := f.add(tn, f.lab.Targets()[1].Domain)
	key := f.bearer(tn.email)
	before := f.probe(time.Minute)
	f.load()
	time.Sleep(s.load)

	if err := f.rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if err := f.rdb.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	full := time.Now()
	for _, r := range []struct {
		what, key, method, path string
		body                    any
		style                   string // what the body of the API's errors holds
	}{
		{"KeyChest claim", "", "GET", "/api/v1.0/access/claim/full@example.com", nil, `"status":"error"`},
		{"KeyChest add", "", "POST", "/api/v1.0/servers/add", map[string]string{"api_key": tn.key, "domain": "full-1.example"}, `"status":"error"`},
		{"add", key, "POST", "/api/v1/domains", map[string]any{"hostname": "full-2.example", "tags": []string{"full"}}, `"error":`},
		{"bulk add", key, "POST", "/api/v1/domains/bulk", []map[string]any{{"hostname": "full-3.example"}, {"hostname": "full-4.example", "tags": []string{"full"}}}, `"error":`},
		{"update", key, "PUT", "/api/v1/domains/" + id, map[string]any{"tags": []string{"full"}, "notes": "full"}, `"error":`},
		{"delete", key, "DELETE", "/api/v1/domains/" + id2, nil, `"error":`},
		{"API key", key, "POST", "/api/v1/api-keys", map[string]any{"label": "full", "scopes": []string{"read"}}, `"error":`},
		{"channel", key, "POST", "/api/v1/channels", map[string]any{"type": "webhook", "name": "full", "url": "https://example.com/hook"}, `"error":`},
		{"list", key, "GET", "/api/v1/domains", nil, `"error":`},
		{"client certificates", key, "GET", "/api/client-certs", nil, `"code":"SERVICE_UNAVAILABLE"`},
	} {
		code, retry, body := f.send(r.key, r.method, r.path, r.body)
		if code != http.StatusServiceUnavailable || retry == "" || !strings.Contains(body, r.style) || !strings.Contains(body, "storage is full") {
			t.Errorf("redis full: %s (%s %s): got %d (Retry-After %q) %s, want 503 with Retry-After saying storage is full, with %s", r.what, r.method, r.path, code, retry, body, r.style)
		}
	}
	// The roles retry what they cannot write and stay up.
	time.Sleep(s.load)
	f.alive()
	if err := f.rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	ready := f.waitReady(time.Minute)
	after := f.probe(time.Minute)
	t.Logf("redis full for %s under load: roles ready %s after memory was back, a new domain stored in %s (%s before)",
		back.Sub(full).Round(time.Millisecond), ready.Round(time.Millisecond), after.Round(time.Millisecond), before.Round(time.Millisecond))

	// Nothing refused left a part of itself: the tenant has its two
	// domains as they were, none of the refused ones, and no tag.
	var list struct {
		Data []struct {
			ID       string   `json:"id"`
			Hostname string   `json:"hostname"`
			Notes    string   `json:"notes"`
			Tags     []string `json:"tags"`
		} `json:"data"`
		Pagination struct {
			Total int `json:"total"`
		} `json:"pagination"`
	}
	code, _, body := f.send(key, "GET", "/api/v1/domains?per_page=100", nil)
	if err := json.Unmarshal([]byte(body), &list); code != http.StatusOK || err != nil {
		t.Fatalf("list after: %d %s", code, body)
	}
	if len(list.Data) != 2 || list.Pagination.Total != 2 {
		t.Errorf("after: %d domains listed (total %d), want the 2 added before: %s", len(list.Data), list.Pagination.Total, body)
	}
	for _, d := range list.Data {
		if (d.ID != id && d.ID != id2) || d.Notes != "" || len(d.Tags) != 0 {
			t.Errorf("after: domain %+v, want %s or %s untouched", d, id, id2)
		}
	}
	if code, _, body := f.send(key, "GET", "/api/v1/domains?tag=full", nil); code != http.StatusOK || !strings.Contains(body, `"total":0`) {
		t.Errorf("after: tag full lists %d %s, want none", code, body)
	}
	var claim struct {
		Status string `json:"status"`
	}
	f.call(http.MethodGet, "/api/v1.0/access/claim/full@example.com", nil, &claim)
	if claim.Status != "created" {
		t.Errorf("after: claim of full@example.com answered %q, want created (the refused claim left nothing)", claim.Status)
	}
	time.Sleep(s.load)
	f.landed("after redis was full")
}
