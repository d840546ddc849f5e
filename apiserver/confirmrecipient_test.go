package apiserver

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/claimlink"
)

// TestRecipientConfirmationLink: a new email channel shows its pending
// recipients (not the account's own address); the mailed link's GET is a
// page that confirms nothing (mail scanners fetch links), its POST
// confirms; a forged or expired link is refused, and another tenant's link
// for the same address confirms nothing here. A pending recipient's mail
// is asked again within the tenant's limit; a confirmed one's is refused.
func TestRecipientConfirmationLink(t *testing.T) {
	const pass = "recipient link passphrase"
	e := newKeyEnv(t, Config{Notify: NotifyConfig{SecretsPassphrase: pass}, RateLimitChannelTests: 2})
	key := e.bootstrapKey("owner@example.com", "read", "write")
	tenant := events.TenantID("owner@example.com")
	r := e.call(0, http.MethodPost, "/api/v1/channels", key, `{"type":"email","to":["owner@example.com","new@example.com","later@example.com"]}`)
	id, _ := r.body["id"].(string)
	if r.code != http.StatusCreated || !slices.Equal(strs(r.body["recipients_pending"]), []string{"new@example.com", "later@example.com"}) {
		t.Fatalf("create: got %d %v, want new and later pending", r.code, r.body)
	}
	pending := func() any {
		t.Helper()
		r := e.call(1, http.MethodGet, "/api/v1/channels/"+id, key, "")
		if r.code != http.StatusOK {
			t.Fatalf("get channel: got %d %v", r.code, r.body)
		}
		return r.body["recipients_pending"]
	}

	links := claimlink.New(pass, e.rdb, e.clock.Now)
	token := func(tenant string, expires time.Duration) string {
		t.Helper()
		tok, err := links.RecipientToken(context.Background(), claimlink.Recipient{TenantID: tenant, Address: "new@example.com",
			ExpiresAt: e.clock.Now().Add(expires)})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tok := token(tenant, 72*time.Hour)
	path := "/api/v1/recipients/confirm/" + tok
	for range 2 { // a scanner fetches the link, twice for good measure
		resp, err := http.Get(e.urls[0] + path)
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), `<form method="post">`) ||
			!strings.Contains(string(page), "new@example.com") || !strings.Contains(string(page), "owner@example.com") {
			t.Fatalf("GET link: got %d %.400s, want the page naming new@example.com and the account", resp.StatusCode, page)
		}
		if resp.Header.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("GET link: Referrer-Policy %q, want no-referrer", resp.Header.Get("Referrer-Policy"))
		}
	}
	if got := pending(); !slices.Equal(strs(got), []string{"new@example.com", "later@example.com"}) {
		t.Fatalf("after GETs of the link: pending %v, want new still pending", got)
	}

	for _, tc := range []struct {
		name, path string
		want       int
	}{
		{"forged", "/api/v1/recipients/confirm/" + tok[:len(tok)-4] + "AAAA", http.StatusBadRequest},
		{"not a token", "/api/v1/recipients/confirm/hello", http.StatusBadRequest},
		{"expired", "/api/v1/recipients/confirm/" + token(tenant, -time.Second), http.StatusGone},
	} {
		if r := e.call(0, http.MethodPost, tc.path, "", ""); r.code != tc.want {
			t.Errorf("POST %s link: got %d %v, want %d", tc.name, r.code, r.body, tc.want)
		}
	}
	// Another tenant's link for the same address confirms it there only;
	// a deleted (or never created) account's link confirms nothing.
	if r := e.call(0, http.MethodPost, "/api/v1/recipients/confirm/"+token(events.TenantID("gone@example.com"), time.Hour), "", ""); r.code != http.StatusNotFound {
		t.Errorf("POST the link of an account that does not exist: got %d %v, want 404", r.code, r.body)
	}
	e.bootstrapKey("other@example.com", "read")
	if r := e.call(0, http.MethodPost, "/api/v1/recipients/confirm/"+token(events.TenantID("other@example.com"), time.Hour), "", ""); r.code != http.StatusOK {
		t.Fatalf("POST another tenant's link: got %d %v, want 200", r.code, r.body)
	}
	if got := pending(); !slices.Equal(strs(got), []string{"new@example.com", "later@example.com"}) {
		t.Fatalf("after another tenant's link: pending %v, want new still pending", got)
	}

	if r := e.call(1, http.MethodPost, path, "", ""); r.code != http.StatusOK || r.body["address"] != "new@example.com" {
		t.Fatalf("POST link: got %d %v, want 200 confirming new@example.com", r.code, r.body)
	}
	if got := pending(); !slices.Equal(strs(got), []string{"later@example.com"}) {
		t.Fatalf("after the POST: pending %v, want later only", got)
	}

	// Asking the mail again: for a pending recipient, within the limit.
	ask := func(addr string) v1Response {
		return e.call(0, http.MethodPost, "/api/v1/channels/"+id+"/confirmations", key, `{"address":"`+addr+`"}`)
	}
	wantV1Error(t, ask("new@example.com"), http.StatusBadRequest, "has not confirmed yet")
	if r := ask("later@example.com"); r.code != http.StatusAccepted {
		t.Fatalf("ask again: got %d %v, want 202", r.code, r.body)
	}
	wantV1Error(t, ask("later@example.com"), http.StatusTooManyRequests, "Rate limit exceeded.")
}

// strs reads a JSON array of strings.
func strs(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, s := range list {
		str, _ := s.(string)
		out = append(out, str)
	}
	return out
}
