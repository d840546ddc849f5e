package notifier

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
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

// A delivery's error shows the target, not the operator's network: the
// resolver a lookup asked and a connection's local end are left out.
func TestTenantError(t *testing.T) {
	local := &net.TCPAddr{IP: net.ParseIP("10.0.0.5"), Port: 34567}
	remote := &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 443}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("post: %w", &net.DNSError{Err: "no such host", Name: "hooks.example", Server: "10.255.255.53:53", IsNotFound: true}),
			"post: lookup hooks.example: no such host"},
		{&net.OpError{Op: "read", Net: "tcp", Source: local, Addr: remote, Err: errors.New("connection reset by peer")},
			"read tcp 192.0.2.7:443: connection reset by peer"},
		{&net.OpError{Op: "dial", Net: "tcp", Addr: remote, Err: errors.New("connection refused")},
			"dial tcp 192.0.2.7:443: connection refused"},
	} {
		if got := tenantError(tc.err); got != tc.want {
			t.Errorf("tenantError(%q) = %q, want %q", tc.err, got, tc.want)
		}
		if strings.Contains(tenantError(tc.err), "10.") {
			t.Errorf("tenantError(%q) names the operator's network", tc.err)
		}
	}
}
