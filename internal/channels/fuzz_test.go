package channels

import (
	"net/mail"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/certfleet/certfleet/internal/printable"
)

// FuzzNormalize feeds a channel's fields, which a tenant sends, to
// normalize: it never panics, a refusal is an *InvalidError (a 400), and
// an accepted channel has a known type and severity, a printable name
// within its length, an absolute http(s) URL without credentials for a
// webhook or Slack channel, and bare, distinct addresses without a control character for email.
func FuzzNormalize(f *testing.F) {
	for _, s := range []struct{ typ, name, u, sev, to, secret string }{
		{TypeWebhook, "ops", "https://hooks.example.com/x?y=1", "warning", "", "0123456789abcdef"},
		{TypeSlack, "", "https://hooks.slack.com/services/T/B/X", "", "", ""},
		{TypeEmail, "mail", "", "critical", "a@example.com\nB@example.com", ""},
		{TypeEmail, "mail", "", "", "Ops <ops@example.com>", ""},
		{TypeEmail, "", "", "", "a@example.com\nA@EXAMPLE.COM", ""},
		{TypeWebhook, "x", "http://user:pw@example.com/", "", "", ""},
		{TypeWebhook, "x", "https://example.com/#frag", "", "", ""},
		{TypeWebhook, "x", "//example.com/", "", "", ""},
		{"sms", "", "", "", "", ""},
		{TypeWebhook, "bell\a", "https://[::1]:8080/", "info", "", "short"},
		{TypeEmail, "", "", "", "o\u202eps@example.com", ""},
	} {
		f.Add(s.typ, s.name, s.u, s.sev, s.to, s.secret)
	}
	f.Fuzz(func(t *testing.T, typ, name, u, sev, to, secret string) {
		in := ChannelInput{Type: typ, Name: name, URL: u, MinSeverity: sev, Secret: &secret}
		if to != "" {
			in.To = strings.Split(to, "\n")
		}
		ch, err := normalize(in)
		if err != nil {
			if _, ok := err.(*InvalidError); !ok {
				t.Fatalf("refused with %T %v, want *InvalidError", err, err)
			}
			return
		}
		if ch.Type != TypeWebhook && ch.Type != TypeSlack && ch.Type != TypeEmail {
			t.Fatalf("accepted type %q", ch.Type)
		}
		if !ValidSeverity(ch.MinSeverity) {
			t.Fatalf("accepted severity %q", ch.MinSeverity)
		}
		if ch.Name == "" || utf8.RuneCountInString(ch.Name) > MaxNameLen || printable.HasControl(ch.Name) {
			t.Fatalf("accepted name %q", ch.Name)
		}
		switch ch.Type {
		case TypeWebhook, TypeSlack:
			pu, err := url.Parse(ch.URL)
			if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Hostname() == "" || pu.User != nil || len(ch.URL) > MaxURLLen {
				t.Fatalf("accepted url %q", ch.URL)
			}
			if len(ch.To) != 0 {
				t.Fatalf("a %s channel with recipients %q", ch.Type, ch.To)
			}
		case TypeEmail:
			if ch.URL != "" || len(ch.To) < 1 || len(ch.To) > MaxRecipients {
				t.Fatalf("accepted email channel url %q, %d recipients", ch.URL, len(ch.To))
			}
			seen := map[string]bool{}
			for _, a := range ch.To {
				pa, err := mail.ParseAddress(a)
				if err != nil || pa.Address != a || printable.HasControl(a) || seen[strings.ToLower(a)] {
					t.Fatalf("accepted recipient %q of %q", a, ch.To)
				}
				seen[strings.ToLower(a)] = true
			}
		}
	})
}
