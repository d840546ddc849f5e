package notifier

import (
	"context"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/internal/guard"
	"github.com/certfleet/certfleet/internal/testenv"
)

func sampleMessage(sev, status string) Message {
	days := 7
	return Message{
		EventID: "evt-" + sev + status, AlertID: "alert-" + sev, Kind: "ssl_expiry", Severity: sev, Status: status,
		Title: "Certificate expires in 7 days", Text: "The certificate of example.com expires on 2026-12-02.",
		DomainID: "dom-1", Hostname: "example.com", Port: 443, ThresholdDays: &days,
		LeafSHA256: strings.Repeat("ab", 32), IPs: []string{"192.0.2.10", "2001:db8::10"}, Regions: []string{"eu-west", "us-east"},
		TriggeredAt: time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC),
		Links:       []Link{{Title: "Alert", URL: "https://certfleet.example/api/v1/alerts?domain_id=dom-1"}},
	}
}

func emailChannel(to ...string) Channel {
	return Channel{ID: "ch_0123456789abcdef0123", TenantID: "t1", Type: TypeEmail, Name: "ops", MinSeverity: SeverityInfo, To: to}
}

func mustEmailSender(t *testing.T, cfg SMTPConfig) *emailSender {
	t.Helper()
	s, err := newEmailSender(cfg, nil)
	if err != nil {
		t.Fatalf("new email sender: %v", err)
	}
	return s.(*emailSender)
}

// parts decodes a multipart/alternative message into its parts' text by
// content type.
func parts(t *testing.T, m *mail.Message) map[string]string {
	t.Helper()
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/alternative" {
		t.Fatalf("content type: got %q (%v), want multipart/alternative", m.Header.Get("Content-Type"), err)
	}
	out := map[string]string{}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("next part: %v", err)
		}
		if got := p.Header.Get("Content-Transfer-Encoding"); got != "quoted-printable" {
			t.Errorf("part encoding: got %q, want quoted-printable", got)
		}
		b, err := io.ReadAll(quotedprintable.NewReader(p))
		if err != nil {
			t.Fatalf("read part: %v", err)
		}
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		out[ct] = string(b)
	}
	return out
}

func TestEmailThroughStartTLSAndAuth(t *testing.T) {
	srv := testenv.SMTP(t, testenv.SMTPOptions{StartTLS: true, Users: map[string]string{"certfleet": "s3cret"}})
	s := mustEmailSender(t, SMTPConfig{
		Addr: srv.Addr, From: "certfleet <alerts@certfleet.example>", Username: "certfleet", Password: "s3cret",
		ServerName: "localhost", ExtraRootsPEM: srv.RootPEM,
	})
	fixed := time.Date(2026, 11, 25, 9, 30, 0, 0, time.UTC)
	s.now = func() time.Time { return fixed }
	msg := sampleMessage(SeverityCritical, StatusTriggered)
	msg.Title = `Certificate <script>alert(1)</script> expires in 7 days`
	ch := emailChannel("ops@example.com", "Dev Team <dev@example.org>")
	if err := s.Send(context.Background(), ch, []Message{msg}); err != nil {
		t.Fatalf("send: %v", err)
	}
	got := srv.Messages()
	if len(got) != 1 {
		t.Fatalf("messages: got %d, want 1 (one message to all recipients)", len(got))
	}
	rec := got[0]
	if !rec.TLS || rec.User != "certfleet" {
		t.Errorf("session: got tls=%v user=%q, want tls=true user=certfleet", rec.TLS, rec.User)
	}
	if rec.From != "alerts@certfleet.example" {
		t.Errorf("envelope from: got %q, want alerts@certfleet.example", rec.From)
	}
	if strings.Join(rec.To, ",") != "ops@example.com,dev@example.org" {
		t.Errorf("envelope to: got %v, want [ops@example.com dev@example.org]", rec.To)
	}
	m, err := mail.ReadMessage(strings.NewReader(string(rec.Data)))
	if err != nil {
		t.Fatalf("parse message: %v", err)
	}
	h := m.Header
	if got := h.Get("Subject"); got != "[CRITICAL] example.com: Certificate <script>alert(1)</script> expires in 7 days" {
		t.Errorf("subject: got %q, want severity, domain and title", got)
	}
	if d, err := h.Date(); err != nil || !d.Equal(fixed) {
		t.Errorf("date: got %v (%v), want %v", d, err, fixed)
	}
	if got := h.Get("Message-ID"); !regexp.MustCompile(`^<[0-9a-f]{32}@certfleet\.example>$`).MatchString(got) {
		t.Errorf("message-id: got %q, want <32 hex@certfleet.example>", got)
	}
	from, err := h.AddressList("From")
	if err != nil || len(from) != 1 || from[0].Address != "alerts@certfleet.example" || from[0].Name != "certfleet" {
		t.Errorf("from: got %v (%v), want certfleet <alerts@certfleet.example>", from, err)
	}
	to, err := h.AddressList("To")
	if err != nil || len(to) != 2 || to[1].Name != "Dev Team" {
		t.Errorf("to: got %v (%v), want both recipients", to, err)
	}
	for k, want := range map[string]string{
		"MIME-Version": "1.0", "Auto-Submitted": "auto-generated",
		"X-Certfleet-Channel": ch.ID, "X-Certfleet-Alert-Id": "alert-critical",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s: got %q, want %q", k, got, want)
		}
	}
	bodies := parts(t, m)
	text := bodies["text/plain"]
	for _, want := range []string{"[CRITICAL] example.com: Certificate", msg.Text, "Threshold:   7 days",
		"IPs:         192.0.2.10, 2001:db8::10", "Regions:     eu-west, us-east", "Triggered:   2026-11-25 08:00:00 UTC",
		"Alert:       https://certfleet.example/api/v1/alerts?domain_id=dom-1"} {
		if !strings.Contains(text, want) {
			t.Errorf("text body lacks %q:\n%s", want, text)
		}
	}
	html := bodies["text/html"]
	if strings.Contains(html, "<script>") || !strings.Contains(html, "&lt;script&gt;") {
		t.Errorf("html body: alert text not escaped:\n%s", html)
	}

	// A retried send is the same message to a mail client.
	if err := s.Send(context.Background(), ch, []Message{msg}); err != nil {
		t.Fatalf("second send: %v", err)
	}
	m2, _ := mail.ReadMessage(strings.NewReader(string(srv.Messages()[1].Data)))
	if a, b := h.Get("Message-ID"), m2.Header.Get("Message-ID"); a != b {
		t.Errorf("message-id of a retry: got %q, want %q", b, a)
	}
}

func TestEmailRefusals(t *testing.T) {
	users := map[string]string{"certfleet": "s3cret"}
	cases := []struct {
		name      string
		opts      testenv.SMTPOptions
		cfg       func(c *SMTPConfig, srv *testenv.SMTPServer)
		permanent bool
		wantErr   string
		wantClass string
	}{
		{
			name: "starttls required, relay offers none",
			opts: testenv.SMTPOptions{},
			cfg:  func(c *SMTPConfig, _ *testenv.SMTPServer) {},
			// Retried: it may be an attacker stripping STARTTLS.
			wantErr: "does not offer STARTTLS", wantClass: ClassTLS,
		},
		{
			name: "opportunistic with credentials never sends them in the clear",
			opts: testenv.SMTPOptions{Users: users, AllowInsecureAuth: true},
			cfg: func(c *SMTPConfig, _ *testenv.SMTPServer) {
				c.StartTLS, c.Username, c.Password = StartTLSOpportunistic, "certfleet", "s3cret"
			},
			wantErr: "refusing to send credentials in the clear", wantClass: ClassTLS,
		},
		{
			name:    "certificate from an unknown root",
			opts:    testenv.SMTPOptions{StartTLS: true},
			cfg:     func(c *SMTPConfig, _ *testenv.SMTPServer) { c.ExtraRootsPEM = nil },
			wantErr: "certificate", wantClass: ClassTLS,
		},
		{
			name:    "certificate for another name",
			opts:    testenv.SMTPOptions{StartTLS: true},
			cfg:     func(c *SMTPConfig, _ *testenv.SMTPServer) { c.ServerName = "smtp.example.com" },
			wantErr: "certificate", wantClass: ClassTLS,
		},
		{
			name: "wrong password",
			opts: testenv.SMTPOptions{StartTLS: true, Users: users},
			cfg: func(c *SMTPConfig, _ *testenv.SMTPServer) {
				c.Username, c.Password = "certfleet", "wrong"
			},
			permanent: true, wantErr: "auth", wantClass: ClassSMTP,
		},
		{
			name:      "every recipient refused",
			opts:      testenv.SMTPOptions{StartTLS: true, FailRcpt: "no such user"},
			cfg:       func(c *SMTPConfig, _ *testenv.SMTPServer) {},
			permanent: true, wantErr: "every recipient refused", wantClass: ClassSMTP,
		},
		{
			name:      "email not configured",
			opts:      testenv.SMTPOptions{},
			cfg:       func(c *SMTPConfig, _ *testenv.SMTPServer) { *c = SMTPConfig{} },
			permanent: true, wantErr: "email is not configured", wantClass: ClassConfig,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := testenv.SMTP(t, tc.opts)
			cfg := SMTPConfig{Addr: srv.Addr, From: "alerts@certfleet.example", ServerName: "localhost", ExtraRootsPEM: srv.RootPEM}
			tc.cfg(&cfg, srv)
			s := mustEmailSender(t, cfg)
			err := s.Send(context.Background(), emailChannel("ops@example.com"), []Message{sampleMessage(SeverityWarning, StatusTriggered)})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("send: got %v, want an error containing %q", err, tc.wantErr)
			}
			if got := errors.Is(err, ErrPermanent); got != tc.permanent {
				t.Errorf("permanent: got %v, want %v (%v)", got, tc.permanent, err)
			}
			// The notifier's attempt record names the same class and retry
			// decision.
			if class, _, permanent := classifySend(err); class != tc.wantClass || permanent != tc.permanent {
				t.Errorf("classified: got %s permanent=%v, want %s permanent=%v", class, permanent, tc.wantClass, tc.permanent)
			}
			if n := len(srv.Messages()); n != 0 {
				t.Errorf("messages: got %d, want 0", n)
			}
			if seen, _ := srv.AuthAttempts(); tc.opts.AllowInsecureAuth && seen != 0 {
				t.Errorf("auth exchanges: got %d, want 0 (no password in the clear)", seen)
			}
		})
	}
}

func TestEmailModes(t *testing.T) {
	cases := []struct {
		name     string
		starttls bool
		mode     string
		wantTLS  bool
	}{
		{name: "opportunistic upgrades when offered", starttls: true, mode: StartTLSOpportunistic, wantTLS: true},
		{name: "opportunistic sends in the clear without credentials", starttls: false, mode: StartTLSOpportunistic, wantTLS: false},
		{name: "off never upgrades", starttls: true, mode: StartTLSOff, wantTLS: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := testenv.SMTP(t, testenv.SMTPOptions{StartTLS: tc.starttls})
			s := mustEmailSender(t, SMTPConfig{Addr: srv.Addr, From: "alerts@certfleet.example", StartTLS: tc.mode,
				ServerName: "localhost", ExtraRootsPEM: srv.RootPEM})
			if err := s.Send(context.Background(), emailChannel("ops@example.com"), []Message{sampleMessage(SeverityInfo, StatusTriggered)}); err != nil {
				t.Fatalf("send: %v", err)
			}
			got := srv.Messages()
			if len(got) != 1 || got[0].TLS != tc.wantTLS {
				t.Fatalf("got %d messages (tls %v), want 1 with tls %v", len(got), got, tc.wantTLS)
			}
		})
	}
}

func TestEmailPartialRecipients(t *testing.T) {
	// One mailbox does not exist: the others still get the message.
	srv := testenv.SMTP(t, testenv.SMTPOptions{StartTLS: true, RefuseRcpt: "gone@example.com"})
	s := mustEmailSender(t, SMTPConfig{Addr: srv.Addr, From: "alerts@certfleet.example", ServerName: "localhost", ExtraRootsPEM: srv.RootPEM})
	err := s.Send(context.Background(), emailChannel("ops@example.com", "gone@example.com"), []Message{sampleMessage(SeverityInfo, StatusTriggered)})
	if err == nil || !errors.Is(err, ErrPermanent) || !strings.Contains(err.Error(), "delivered to 1 of 2") {
		t.Fatalf("send: got %v, want a permanent error saying 1 of 2", err)
	}
	got := srv.Messages()
	if len(got) != 1 || strings.Join(got[0].To, ",") != "ops@example.com" {
		t.Fatalf("messages: got %v, want one to ops@example.com", got)
	}
}

func TestEmailTimeout(t *testing.T) {
	// A relay that accepts the connection and never greets.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	s := mustEmailSender(t, SMTPConfig{Addr: l.Addr().String(), From: "alerts@certfleet.example", Timeout: 300 * time.Millisecond})
	start := time.Now()
	err = s.Send(context.Background(), emailChannel("ops@example.com"), []Message{sampleMessage(SeverityInfo, StatusTriggered)})
	took := time.Since(start)
	if err == nil || errors.Is(err, ErrPermanent) {
		t.Fatalf("send: got %v, want a retryable error", err)
	}
	if took > 2*time.Second {
		t.Errorf("send took %s, want about the 300ms timeout", took)
	}
}

func TestEmailHeaderInjection(t *testing.T) {
	srv := testenv.SMTP(t, testenv.SMTPOptions{StartTLS: true})
	s := mustEmailSender(t, SMTPConfig{Addr: srv.Addr, From: "alerts@certfleet.example", ServerName: "localhost", ExtraRootsPEM: srv.RootPEM})
	msg := sampleMessage(SeverityWarning, StatusTriggered)
	msg.Title = "expires\r\nBcc: victim@example.net\r\n\r\nforged body"
	if err := s.Send(context.Background(), emailChannel("ops@example.com"), []Message{msg}); err != nil {
		t.Fatalf("send: %v", err)
	}
	m, err := mail.ReadMessage(strings.NewReader(string(srv.Messages()[0].Data)))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if got := m.Header.Get("Bcc"); got != "" {
		t.Errorf("bcc header: got %q, want none", got)
	}
	got, err := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
	if err != nil || strings.ContainsAny(got, "\r\n") || !strings.Contains(got, "Bcc: victim") {
		t.Errorf("subject: got %q, want the title kept on one line", got)
	}
	// A recipient that smuggles a second address is refused before dialing.
	err = s.Send(context.Background(), emailChannel("ops@example.com\r\nRCPT TO:<x@example.net>"), []Message{msg})
	if !errors.Is(err, ErrPermanent) {
		t.Errorf("bad recipient: got %v, want a permanent error", err)
	}
}

func TestEmailDigestRendering(t *testing.T) {
	srv := testenv.SMTP(t, testenv.SMTPOptions{StartTLS: true})
	s := mustEmailSender(t, SMTPConfig{Addr: srv.Addr, From: "alerts@certfleet.example", ServerName: "localhost", ExtraRootsPEM: srv.RootPEM})
	s.now = func() time.Time { return time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC) }
	resolved := sampleMessage(SeverityCritical, StatusResolved)
	at := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	resolved.ResolvedAt, resolved.ResolvedWhy = &at, "certificate renewed"
	msgs := []Message{sampleMessage(SeverityInfo, StatusTriggered), resolved, sampleMessage(SeverityCritical, StatusTriggered), sampleMessage(SeverityWarning, StatusTriggered)}
	ch := emailChannel("ops@example.com")
	ch.Digest = true
	ctx := WithDeliveryID(WithDigest(context.Background()), "dl_0123456789abcdef")
	if err := s.Send(ctx, ch, msgs); err != nil {
		t.Fatalf("send: %v", err)
	}
	m, err := mail.ReadMessage(strings.NewReader(string(srv.Messages()[0].Data)))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	want := "[certfleet digest] 2026-11-26: 4 alerts: 1 critical, 1 warning, 1 info, 1 resolved (ops)"
	if got := m.Header.Get("Subject"); got != want {
		t.Errorf("subject: got %q, want %q", got, want)
	}
	if got := m.Header.Get("Message-ID"); got != "<dl_0123456789abcdef@certfleet.example>" {
		t.Errorf("message-id: got %q, want the delivery's", got)
	}
	if got := m.Header.Get("X-Certfleet-Alert-Id"); got != "" {
		t.Errorf("digest alert id header: got %q, want none", got)
	}
	text := parts(t, m)["text/plain"]
	order := []string{"[CRITICAL]", "[WARNING]", "[INFO]", "[RESOLVED]"}
	last := -1
	for _, l := range order {
		i := strings.Index(text, l)
		if i <= last {
			t.Fatalf("digest order: %s at %d, after %d; want %v:\n%s", l, i, last, order, text)
		}
		last = i
	}
	if !strings.Contains(text, "Resolved:    2026-11-25 20:00:00 UTC (certificate renewed)") {
		t.Errorf("digest lacks the resolution:\n%s", text)
	}
}

func TestSMTPConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  SMTPConfig
		want []string
	}{
		{name: "disabled", cfg: SMTPConfig{}},
		{name: "complete", cfg: SMTPConfig{Addr: "smtp.example.com:587", From: "a@example.com", Username: "u", Password: "p"}},
		{name: "loopback relay without tls", cfg: SMTPConfig{Addr: "127.0.0.1:25", From: "a@example.com", StartTLS: StartTLSOff}},
		{name: "no from", cfg: SMTPConfig{Addr: "smtp.example.com:587"}, want: []string{"smtp from is required"}},
		{name: "bad from and address", cfg: SMTPConfig{Addr: "smtp.example.com", From: "nope"}, want: []string{"host:port", "not an email address"}},
		{name: "bad mode", cfg: SMTPConfig{Addr: "h:25", From: "a@example.com", StartTLS: "sometimes"}, want: []string{"required, opportunistic or off"}},
		{name: "credentials in the clear", cfg: SMTPConfig{Addr: "h:25", From: "a@example.com", StartTLS: StartTLSOff, Username: "u"}, want: []string{"never sent in the clear"}},
		{name: "password alone", cfg: SMTPConfig{Addr: "h:25", From: "a@example.com", Password: "p"}, want: []string{"password without a username"}},
		{name: "settings without a relay", cfg: SMTPConfig{From: "a@example.com"}, want: []string{"need an smtp address"}},
		{name: "bad roots", cfg: SMTPConfig{Addr: "h:25", From: "a@example.com", ExtraRootsPEM: []byte("junk")}, want: []string{"no PEM certificate"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			c.setDefaults()
			err := errors.Join(c.validate()...)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("validate: got %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("validate: got nil, want errors %v", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("validate: got %v, want it to contain %q", err, w)
				}
			}
		})
	}
}

// BenchmarkEmailSend is one alert email per op to the local relay: in the
// clear (the baseline) and with STARTTLS and AUTH PLAIN, a new connection
// and handshake per message as the notifier makes them.
func BenchmarkEmailSend(b *testing.B) {
	cases := []struct {
		name string
		opts testenv.SMTPOptions
		cfg  SMTPConfig
	}{
		{name: "plain", opts: testenv.SMTPOptions{}, cfg: SMTPConfig{StartTLS: StartTLSOff}},
		{name: "starttls+auth", opts: testenv.SMTPOptions{StartTLS: true, Users: map[string]string{"u": "p"}},
			cfg: SMTPConfig{Username: "u", Password: "p"}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			srv := testenv.SMTP(b, tc.opts)
			cfg := tc.cfg
			cfg.Addr, cfg.From, cfg.ServerName, cfg.ExtraRootsPEM = srv.Addr, "alerts@certfleet.example", "localhost", srv.RootPEM
			s, err := newEmailSender(cfg, nil)
			if err != nil {
				b.Fatal(err)
			}
			ch := emailChannel("ops@example.com", "dev@example.org")
			msgs := []Message{sampleMessage(SeverityCritical, StatusTriggered)}
			for b.Loop() {
				if err := s.Send(context.Background(), ch, msgs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestEmailRelayThroughGuard: the relay is dialed through the guard as
// the operator's server: a loopback relay works (the other tests), a
// cloud-metadata address is refused before any packet is sent.
func TestEmailRelayThroughGuard(t *testing.T) {
	s := mustEmailSender(t, SMTPConfig{Addr: "169.254.169.254:25", From: "alerts@certfleet.example", Timeout: 2 * time.Second})
	err := s.Send(context.Background(), emailChannel("ops@example.com"), []Message{sampleMessage(SeverityInfo, StatusTriggered)})
	var blocked *guard.BlockedError
	if !errors.As(err, &blocked) {
		t.Fatalf("send via 169.254.169.254: got %v, want the guard's refusal", err)
	}
}
