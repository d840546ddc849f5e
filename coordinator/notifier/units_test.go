package notifier

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/internal/guard"
)

func TestSlackPayload(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC)
	one := Message{Severity: SeverityCritical, Status: StatusTriggered, Title: "a <b> & c", Text: "x", Hostname: "h.example",
		Kind: "ssl_expired", TriggeredAt: at, Links: []Link{{Title: "Alerts", URL: "https://api.example/a?x=1&y=2"}}}
	p := slackPayload([]Message{one})
	if p.Text != "[CRITICAL] a <b> & c" || len(p.Blocks) != 2 {
		t.Fatalf("one message: got %+v, want the headline and two blocks", p)
	}
	if got := p.Blocks[0].Text.Text; !strings.Contains(got, "a &lt;b&gt; &amp; c") || !strings.HasPrefix(got, ":red_circle:") {
		t.Errorf("section: got %q, want escaped mrkdwn with the critical emoji", got)
	}
	if got := p.Blocks[1].Elements[1].Text; got != "<https://api.example/a?x=1&amp;y=2|Alerts>" {
		t.Errorf("link: got %q", got)
	}
	many := make([]Message, 25)
	for i := range many {
		many[i] = one
	}
	p = slackPayload(many)
	// header + 20 messages x 2 blocks + "and 5 more": within Slack's 50.
	if p.Text != "certfleet: 25 alerts" || len(p.Blocks) != 42 || !strings.Contains(p.Blocks[41].Elements[0].Text, "5 more") {
		t.Errorf("digest: got text %q and %d blocks, want 42 ending with 5 more", p.Text, len(p.Blocks))
	}
}

// A failed send's error, which read keys list among the channel's
// attempts, names the URL redacted: a Slack webhook's path is its secret.
func TestSendErrorRedactsURL(t *testing.T) {
	client := guard.HTTPClient((&guard.Dialer{}).DialHost, time.Second, nil)
	err := postJSON(context.Background(), client, "http://127.0.0.1:1/services/T0/B0/S3CRET?token=x", []byte(`{}`), nil, 1024)
	if err == nil {
		t.Fatal("a send to a refused target succeeded")
	}
	if got := guard.TenantError(err); strings.Contains(got, "S3CRET") || strings.Contains(got, "token") ||
		!strings.Contains(got, "http://127.0.0.1:1/services/...") {
		t.Errorf("error %q: want the URL redacted to http://127.0.0.1:1/services/...", got)
	}
	if class, _, _ := classifySend(err); class != ClassRefusedTarget {
		t.Errorf("class: got %s, want %s (the redaction keeps the cause)", class, ClassRefusedTarget)
	}
}
