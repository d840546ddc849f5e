package apiserver

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/internal/claimlink"
)

// The mailed approval link approves nothing when fetched: mail gateways
// and link scanners GET every link of a message before anyone reads it,
// so a GET that approved let the claimer's key (whose secret the claimer
// holds) be approved by the victim's own mail filter. The GET is a page
// with a button; its POST approves.
func TestApprovalLinkNeedsAPost(t *testing.T) {
	const pass = "approval link passphrase"
	e := newKeyEnv(t, Config{Notify: NotifyConfig{SecretsPassphrase: pass}})
	e.bootstrapKey("victim@example.com", "read", "write")
	r := e.claimGet(1, "victim@example.com")
	stolen, _ := r.body["api_key"].(string)
	if r.code != http.StatusOK || stolen == "" {
		t.Fatalf("claim: got %d %v", r.code, r.body)
	}
	p, err := e.srv[0].accounts.Authenticate(context.Background(), stolen)
	if err != nil || !p.Held {
		t.Fatalf("claimed key: got %+v %v, want a held key", p, err)
	}
	token, err := claimlink.New(pass, e.rdb, e.clock.Now).Token(context.Background(),
		claimlink.Claim{TenantID: p.TenantID, KeyID: p.KeyID, ExpiresAt: e.clock.Now().Add(72 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	link := e.urls[0] + "/api/v1.0/access/confirm/" + token
	held := func() bool {
		t.Helper()
		p, err := e.srv[0].accounts.Authenticate(context.Background(), stolen)
		if err != nil {
			t.Fatal(err)
		}
		return p.Held
	}

	// A scanner fetches the link, twice for good measure.
	for range 2 {
		resp, err := http.Get(link)
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), `<form method="post">`) ||
			!strings.Contains(string(page), p.KeyID) {
			t.Fatalf("GET link: got %d %.300s, want the approval page naming key %s", resp.StatusCode, page, p.KeyID)
		}
	}
	if !held() {
		t.Fatal("fetching the approval link approved the claimed key")
	}
	// A bad link answers as before.
	if r := e.call(0, http.MethodGet, "/api/v1.0/access/confirm/"+token[:len(token)-4]+"AAAA", "", ""); r.code != http.StatusBadRequest {
		t.Errorf("GET a bad link: got %d %v, want 400", r.code, r.body)
	}

	// The account's owner presses the button.
	if r := e.call(1, http.MethodPost, "/api/v1.0/access/confirm/"+token, "", ""); r.code != http.StatusOK || r.body["status"] != "success" {
		t.Fatalf("POST link: got %d %v, want 200 success", r.code, r.body)
	}
	if held() {
		t.Error("the key is still held after the approval")
	}
}
