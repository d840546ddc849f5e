package notifier

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://hooks.slack.com/services/T000/B000/XXXX", "https://hooks.slack.com/services/..."},
		{"https://hooks.example.com/in?token=abc", "https://hooks.example.com/in"},
		{"http://127.0.0.1:8080/", "http://127.0.0.1:8080/"},
		{"", ""},
	}
	for _, tc := range tests {
		if got := redactURL(tc.in); got != tc.want {
			t.Errorf("redactURL(%q): got %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestPassphrase(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, pass, file, want string
		wantErr                bool
	}{
		{name: "flag wins", pass: "from the flag!", file: write("a", "from the file\n"), want: "from the flag!"},
		{name: "first line of the file", file: write("b", "from the file\r\nsecond\n"), want: "from the file"},
		{name: "neither", want: ""},
		{name: "empty first line", file: write("c", "\nx\n"), wantErr: true},
		{name: "missing file", file: filepath.Join(dir, "none"), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Passphrase(tc.pass, tc.file)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("got %q, %v; want %q, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

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
