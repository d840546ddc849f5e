package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/coordinator/notifier"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

const channelPassphrase = "channels test passphrase"

func TestChannelsCRUD(t *testing.T) {
	e := newKeyEnv(t, Config{Notify: NotifyConfig{SecretsPassphrase: channelPassphrase}})
	key := e.bootstrapKey("ops@example.com", "read", "write")
	secret := "whsec-0123456789abcdef"

	// Created on one replica, read on the other; the secret never shows.
	r := e.call(0, http.MethodPost, "/api/v1/channels", key,
		`{"type":"webhook","name":"ops hook","url":"https://hooks.example.com/in","secret":"`+secret+`","min_severity":"warning"}`)
	if r.code != http.StatusCreated {
		t.Fatalf("create: got %d %v, want 201", r.code, r.body)
	}
	id, _ := r.body["id"].(string)
	want := map[string]any{"id": id, "type": "webhook", "name": "ops hook", "url": "https://hooks.example.com/in", "to": []any{},
		"min_severity": "warning", "digest": false, "secret_set": true, "recipients_pending": []any{},
		"created_at": now.Format(time.RFC3339), "updated_at": now.Format(time.RFC3339)}
	if !jsonEqual(r.body, want) {
		t.Errorf("create:\n got %v\nwant %v", r.body, want)
	}
	r = e.call(1, http.MethodGet, "/api/v1/channels/"+id, key, "")
	if r.code != http.StatusOK || !jsonEqual(r.body, want) {
		t.Errorf("get on the other replica: got %d %v, want %v", r.code, r.body, want)
	}
	e.call(0, http.MethodPost, "/api/v1/channels", key, `{"type":"email","to":["a@example.com"],"digest":true}`)
	e.call(0, http.MethodPost, "/api/v1/channels", key, `{"type":"slack","url":"https://hooks.slack.com/services/T/B/C"}`)
	r = e.call(1, http.MethodGet, "/api/v1/channels", key, "")
	data, _ := r.body["data"].([]any)
	if r.code != http.StatusOK || len(data) != 3 {
		t.Fatalf("list: got %d %v, want 3 channels", r.code, r.body)
	}
	var em map[string]any
	for _, d := range data { // same created_at: ordered by id
		if d.(map[string]any)["type"] == "email" {
			em = d.(map[string]any)
		}
	}
	if em == nil || em["url"] != nil || em["digest"] != true || em["secret_set"] != false || len(em["to"].([]any)) != 1 ||
		len(em["recipients_pending"].([]any)) != 1 {
		t.Errorf("email channel: got %v, want url null, digest true, no secret, one recipient, pending", em)
	}

	// PUT without secret keeps it; with "" removes it; the type is fixed.
	r = e.call(1, http.MethodPut, "/api/v1/channels/"+id, key, `{"url":"https://hooks.example.com/v2","name":"renamed"}`)
	if r.code != http.StatusOK || r.body["secret_set"] != true || r.body["url"] != "https://hooks.example.com/v2" || r.body["min_severity"] != "info" {
		t.Errorf("update keeping the secret: got %d %v, want secret_set, new url, min_severity back to info", r.code, r.body)
	}
	r = e.call(0, http.MethodPut, "/api/v1/channels/"+id, key, `{"type":"slack","url":"https://hooks.example.com/v2"}`)
	wantV1Error(t, r, http.StatusBadRequest, "cannot change")
	r = e.call(0, http.MethodPut, "/api/v1/channels/"+id, key, `{"url":"https://hooks.example.com/v2","secret":""}`)
	if r.code != http.StatusOK || r.body["secret_set"] != false {
		t.Errorf("update removing the secret: got %d %v, want secret_set false", r.code, r.body)
	}

	// No answer, key or value in Redis carries the secret in clear.
	ctx := context.Background()
	keys, _ := e.rdb.Keys(ctx, "*").Result()
	for _, k := range keys {
		if typ, _ := e.rdb.Type(ctx, k).Result(); typ == "string" {
			if v, _ := e.rdb.Get(ctx, k).Result(); strings.Contains(v, secret) {
				t.Errorf("redis %s holds the secret in clear", k)
			}
		}
	}
	for _, ev := range keyEvents(t, e.rdb)[events.ChannelCreated] {
		if strings.Contains(string(ev.Payload), secret) {
			t.Errorf("event %s carries the secret", ev.Name)
		}
	}

	r = e.call(0, http.MethodDelete, "/api/v1/channels/"+id, key, "")
	if r.code != http.StatusOK || r.body["message"] != "Channel deleted" {
		t.Errorf("delete: got %d %v, want 200 Channel deleted", r.code, r.body)
	}
	wantV1Error(t, e.call(1, http.MethodGet, "/api/v1/channels/"+id, key, ""), http.StatusNotFound, "Channel not found")
	if n := len(keyEvents(t, e.rdb)[events.ChannelDeleted]); n != 1 {
		t.Errorf("deleted events: got %d, want 1", n)
	}
}

// jsonEqual compares decoded JSON objects.
func jsonEqual(a, b map[string]any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func TestChannelsValidation(t *testing.T) {
	e := newKeyEnv(t, Config{Notify: NotifyConfig{SecretsPassphrase: channelPassphrase}})
	key := e.bootstrapKey("ops@example.com", "read", "write")
	tests := []struct {
		name, body, want string
	}{
		{name: "no type", body: `{"url":"https://x.example"}`, want: `"type" is required`},
		{name: "unknown type", body: `{"type":"pager"}`, want: `"type" must be webhook, slack or email`},
		{name: "unknown field", body: `{"type":"webhook","url":"https://x.example","headers":{}}`, want: `unknown field "headers"`},
		{name: "ftp url", body: `{"type":"webhook","url":"ftp://x.example/"}`, want: "http or https"},
		{name: "no url", body: `{"type":"slack"}`, want: `"url" is required`},
		{name: "short secret", body: `{"type":"webhook","url":"https://x.example","secret":"abc"}`, want: "16 to 256"},
		{name: "bad severity", body: `{"type":"webhook","url":"https://x.example","min_severity":"urgent"}`, want: "min_severity"},
		{name: "email without to", body: `{"type":"email","to":[]}`, want: "1 to 20"},
		{name: "email bad address", body: `{"type":"email","to":["not an address"]}`, want: "bare email address"},
		{name: "to of wrong type", body: `{"type":"email","to":"a@example.com"}`, want: `field "to" must be an array of strings`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantV1Error(t, e.call(0, http.MethodPost, "/api/v1/channels", key, tc.body), http.StatusBadRequest, tc.want)
		})
	}
	r := e.call(0, http.MethodPost, "/api/v1/channels", key, `{"type":"email","to":["`+strings.Repeat("a@example.com\",\"", 20)+`b@example.com"]}`)
	wantV1Error(t, r, http.StatusBadRequest, "1 to 20")
	r = e.call(0, http.MethodGet, "/api/v1/channels/ch_00000000000000000000/deliveries?limit=0", key, "")
	wantV1Error(t, r, http.StatusBadRequest, "limit must be")

	// A server without passphrase refuses a secret, clearly, and accepts
	// the same channel without it.
	bare := newKeyEnv(t, Config{})
	bkey := bare.bootstrapKey("ops@example.com", "read", "write")
	r = bare.call(0, http.MethodPost, "/api/v1/channels", bkey, `{"type":"webhook","url":"https://x.example","secret":"0123456789abcdef"}`)
	wantV1Error(t, r, http.StatusBadRequest, "--secrets-passphrase")
	if r := bare.call(0, http.MethodPost, "/api/v1/channels", bkey, `{"type":"webhook","url":"https://x.example"}`); r.code != http.StatusCreated {
		t.Errorf("without secret: got %d %v, want 201", r.code, r.body)
	}
}

func TestChannelsTenancyAndScopes(t *testing.T) {
	e := newKeyEnv(t, Config{})
	alice := e.bootstrapKey("alice@example.com", "read", "write")
	bob := e.bootstrapKey("bob@example.com", "read", "write")
	reader := e.bootstrapKey("alice@example.com", "read")
	r := e.call(0, http.MethodPost, "/api/v1/channels", alice, `{"type":"slack","url":"https://hooks.slack.com/services/T/B/C"}`)
	id, _ := r.body["id"].(string)
	if r.code != http.StatusCreated || id == "" {
		t.Fatalf("create: got %d %v", r.code, r.body)
	}
	for _, tc := range []struct{ method, path, body string }{
		{http.MethodGet, "/api/v1/channels/" + id, ""},
		{http.MethodPut, "/api/v1/channels/" + id, `{"url":"https://evil.example"}`},
		{http.MethodDelete, "/api/v1/channels/" + id, ""},
		{http.MethodGet, "/api/v1/channels/" + id + "/deliveries", ""},
		{http.MethodPost, "/api/v1/channels/" + id + "/test", ""},
		{http.MethodGet, "/api/v1/channels/not-an-id", ""},
	} {
		wantV1Error(t, e.call(1, tc.method, tc.path, bob, tc.body), http.StatusNotFound, "Channel not found")
	}
	if r := e.call(1, http.MethodGet, "/api/v1/channels", bob, ""); len(r.body["data"].([]any)) != 0 {
		t.Errorf("bob's list: got %v, want empty", r.body)
	}
	wantV1Error(t, e.call(0, http.MethodPost, "/api/v1/channels/"+id+"/test", reader, ""), http.StatusForbidden, "write")
	wantV1Error(t, e.call(0, http.MethodDelete, "/api/v1/channels/"+id, reader, ""), http.StatusForbidden, "write")
	wantV1Error(t, e.call(0, http.MethodGet, "/api/v1/channels", "", ""), http.StatusUnauthorized, httpapi.MsgUnauthorized)
	// A Slack URL is the credential to post into the tenant's chat: a
	// read key sees it redacted, a write key whole.
	if r := e.call(0, http.MethodGet, "/api/v1/channels/"+id, reader, ""); r.code != http.StatusOK || r.body["url"] != "https://hooks.slack.com/services/..." {
		t.Errorf("read key get: got %d %v, want 200 with the URL redacted", r.code, r.body["url"])
	}
	if r := e.call(0, http.MethodGet, "/api/v1/channels", reader, ""); fmt.Sprint(r.body["data"]) == "" ||
		strings.Contains(fmt.Sprint(r.body["data"]), "T/B/C") {
		t.Errorf("read key list: got %v, want the URL redacted", r.body["data"])
	}
	if r := e.call(0, http.MethodGet, "/api/v1/channels/"+id, alice, ""); r.body["url"] != "https://hooks.slack.com/services/T/B/C" {
		t.Errorf("write key get: got url %v, want it whole", r.body["url"])
	}
}

// TestChannelTestDelivered sends a test through the API to a local
// receiver with a notifier running, and lists the attempt.
func TestChannelTestDelivered(t *testing.T) {
	e := newKeyEnv(t, Config{Notify: NotifyConfig{SecretsPassphrase: channelPassphrase, Targets: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}})
	key := e.bootstrapKey("ops@example.com", "read", "write")
	var mu sync.Mutex
	var got []notifier.WebhookBody
	secret := "whsec-0123456789abcdef"
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := notifier.Verify(secret, r.Header.Get(notifier.HeaderTimestamp), r.Header.Get(notifier.HeaderSignature), body, time.Now(), 5*time.Minute); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var b notifier.WebhookBody
		_ = json.Unmarshal(body, &b)
		mu.Lock()
		got = append(got, b)
		mu.Unlock()
	}))
	t.Cleanup(rcv.Close)
	n, err := notifier.New(notifier.Config{Consumer: "n1", Passphrase: channelPassphrase, Poll: 10 * time.Millisecond,
		Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}, e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	// The group before the request: Run creates it at the stream's end,
	// which could be after the request's event.
	if err := notifier.EnsureGroup(context.Background(), e.rdb); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = n.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	r := e.call(0, http.MethodPost, "/api/v1/channels", key,
		`{"type":"webhook","url":"`+rcv.URL+`/hook","secret":"`+secret+`","min_severity":"critical","digest":true}`)
	id, _ := r.body["id"].(string)
	r = e.call(1, http.MethodPost, "/api/v1/channels/"+id+"/test", key, "")
	did, _ := r.body["delivery_id"].(string)
	if r.code != http.StatusAccepted || !strings.HasPrefix(did, "dl_") {
		t.Fatalf("test: got %d %v, want 202 with a delivery id", r.code, r.body)
	}
	deadline := time.Now().Add(10 * time.Second)
	var list []any
	for time.Now().Before(deadline) {
		r = e.call(0, http.MethodGet, "/api/v1/channels/"+id+"/deliveries?limit=10", key, "")
		if list, _ = r.body["data"].([]any); len(list) > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(list) != 1 {
		t.Fatalf("deliveries: got %v, want one attempt", r.body)
	}
	a := list[0].(map[string]any)
	if a["delivery_id"] != did || a["status"] != "delivered" || a["attempt"] != 1.0 {
		t.Errorf("attempt: got %v, want delivered attempt 1 of %s", a, did)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].DeliveryID != did || len(got[0].Messages) != 1 || got[0].Messages[0].Status != notifier.StatusTest {
		t.Errorf("receiver: got %+v, want one signed test message of %s", got, did)
	}
}
