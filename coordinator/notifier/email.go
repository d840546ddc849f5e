package notifier

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/certfleet/certfleet/internal/guard"
)

// Email channels are sent through the operator's SMTP relay. These are the
// flags that fill SMTPConfig (registered in cmd/certfleet/flags_notify.go):
//
//	--smtp-addr host:port        the relay; empty: email channels fail at once
//	--smtp-from address          envelope sender and From header
//	--smtp-username name         AUTH PLAIN user; empty: no AUTH
//	--smtp-password secret       AUTH PLAIN password (env CERTFLEET_SMTP_PASSWORD)
//	--smtp-starttls mode         required (default) | opportunistic | off
//	--smtp-extra-roots file      PEM roots trusted besides the system pool
//	--smtp-timeout duration      one whole SMTP conversation (default 30s)
//
// The relay is dialed through the guard as a server the operator named
// (guard.Dialer.DialTrusted, as the RDAP bootstrap's and --whois-server's
// are): its address is the operator's setting (often loopback or a
// private relay), so what it resolves to is allowed, but never a cloud
// metadata or unspecified address. Tenants choose only recipient
// addresses, which go into RCPT TO and never become a connection target.

// STARTTLS modes.
const (
	// StartTLSRequired refuses to send unless the relay offers STARTTLS
	// and its certificate verifies.
	StartTLSRequired = "required"
	// StartTLSOpportunistic upgrades when offered (and then verifies the
	// certificate), and sends in the clear otherwise, but never
	// authenticates in the clear.
	StartTLSOpportunistic = "opportunistic"
	// StartTLSOff never upgrades: for a relay on loopback.
	StartTLSOff = "off"
)

// SMTPConfig is the operator's SMTP relay, shared by every email channel.
type SMTPConfig struct {
	// Addr is the relay's host:port. Empty disables email: sends to email
	// channels fail permanently, saying so.
	Addr string
	// From is the envelope sender and the From header
	// ("certfleet <alerts@example.com>" or a bare address).
	From string
	// Username enables AUTH PLAIN, which is only ever sent over TLS.
	Username string
	// Password is Username's password.
	Password string
	// StartTLS is StartTLSRequired, StartTLSOpportunistic or StartTLSOff.
	// Default required.
	StartTLS string
	// ServerName is the name the relay's certificate must hold. Default
	// the host of Addr.
	ServerName string
	// ExtraRootsPEM are roots trusted besides the system pool when
	// verifying the relay's certificate (a relay with an internal CA).
	ExtraRootsPEM []byte
	// HelloName is the name sent in EHLO. Default the host name.
	HelloName string
	// Timeout bounds one conversation: connect, STARTTLS, AUTH and DATA.
	// Default 30s.
	Timeout time.Duration
}

func (c *SMTPConfig) setDefaults() {
	if c.StartTLS == "" {
		c.StartTLS = StartTLSRequired
	}
	if c.ServerName == "" && c.Addr != "" {
		if host, _, err := net.SplitHostPort(c.Addr); err == nil {
			c.ServerName = host
		}
	}
	if c.HelloName == "" {
		host, err := os.Hostname()
		if err != nil || host == "" || strings.ContainsAny(host, " \r\n") {
			host = "localhost"
		}
		c.HelloName = host
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
}

// Enabled tells whether email can be sent at all.
func (c SMTPConfig) Enabled() bool { return c.Addr != "" }

func (c *SMTPConfig) validate() []error {
	var errs []error
	switch c.StartTLS {
	case StartTLSRequired, StartTLSOpportunistic, StartTLSOff:
	default:
		errs = append(errs, fmt.Errorf("smtp starttls must be required, opportunistic or off, got %q", c.StartTLS))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("smtp timeout must be positive, got %s", c.Timeout))
	}
	if len(c.ExtraRootsPEM) > 0 && !x509.NewCertPool().AppendCertsFromPEM(c.ExtraRootsPEM) {
		errs = append(errs, errors.New("smtp extra roots hold no PEM certificate"))
	}
	if c.Addr == "" {
		if c.Username != "" || c.Password != "" || c.From != "" {
			errs = append(errs, errors.New("smtp from, username and password need an smtp address"))
		}
		return errs
	}
	if _, port, err := net.SplitHostPort(c.Addr); err != nil || port == "" {
		errs = append(errs, fmt.Errorf("smtp address must be host:port, got %q", c.Addr))
	}
	if c.From == "" {
		errs = append(errs, errors.New("smtp from is required with an smtp address"))
	} else if _, err := mail.ParseAddress(c.From); err != nil {
		errs = append(errs, fmt.Errorf("smtp from %q is not an email address: %w", c.From, err))
	}
	if c.Password != "" && c.Username == "" {
		errs = append(errs, errors.New("smtp password without a username"))
	}
	if c.Username != "" && c.StartTLS == StartTLSOff {
		errs = append(errs, errors.New("smtp username needs starttls required or opportunistic: credentials are never sent in the clear"))
	}
	return errs
}

// emailSender sends one message to all the channel's recipients through the
// relay; a digest (several messages, or a digest channel) is one message.
type emailSender struct {
	cfg   SMTPConfig
	from  *mail.Address
	roots *x509.CertPool
	dial  DialFunc
	now   func() time.Time
}

// newEmailSender returns the email sender for cfg, dialing the relay with
// dial (nil: the guard's DialTrusted).
func newEmailSender(cfg SMTPConfig, dial DialFunc) (Sender, error) {
	cfg.setDefaults()
	if err := errors.Join(cfg.validate()...); err != nil {
		return nil, fmt.Errorf("smtp config: %w", err)
	}
	s := &emailSender{cfg: cfg, dial: dial, now: time.Now}
	if s.dial == nil {
		s.dial = (&guard.Dialer{}).DialTrusted
	}
	if cfg.Enabled() {
		from, err := mail.ParseAddress(cfg.From)
		if err != nil {
			return nil, fmt.Errorf("parse smtp from: %w", err)
		}
		s.from = from
	}
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if len(cfg.ExtraRootsPEM) > 0 {
		roots.AppendCertsFromPEM(cfg.ExtraRootsPEM)
	}
	s.roots = roots
	return s, nil
}

// ErrEmailDisabled is returned for an email channel when no relay is set.
var ErrEmailDisabled = &SendError{Class: ClassConfig, Permanent: true,
	Err: fmt.Errorf("email is not configured on this notifier (--smtp-addr): %w", ErrPermanent)}

// Send delivers msgs as one message to every address of ch.To. Refusals
// that no retry fixes (bad recipients, a 5xx reply, no relay configured)
// wrap ErrPermanent; a relay that does not offer STARTTLS when it is
// required (or when credentials are to be sent), a certificate that does
// not verify, or a connection failure are retried: the relay's operator
// may fix them, and a missing STARTTLS can be an attacker's stripping.
func (s *emailSender) Send(ctx context.Context, ch Channel, msgs []Message) error {
	if len(msgs) == 0 {
		return nil
	}
	if !s.cfg.Enabled() {
		return ErrEmailDisabled
	}
	to, err := recipients(ch.To)
	if err != nil {
		return err
	}
	data, err := s.compose(ch, to, msgs, IsDigest(ctx) || len(msgs) > 1, DeliveryIDFrom(ctx))
	if err != nil {
		return fmt.Errorf("compose email: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if err := s.transmit(ctx, to, data); err != nil {
		if ctx.Err() != nil && !errors.Is(err, ErrPermanent) {
			return fmt.Errorf("send email via %s: %w (%w)", s.cfg.Addr, ctx.Err(), err)
		}
		return fmt.Errorf("send email via %s: %w", s.cfg.Addr, err)
	}
	return nil
}

// recipients parses the channel's addresses; the API validated them, so a
// bad one here is a permanent failure.
func recipients(list []string) ([]*mail.Address, error) {
	if len(list) == 0 {
		return nil, &SendError{Class: ClassConfig, Permanent: true, Err: fmt.Errorf("email channel has no recipients: %w", ErrPermanent)}
	}
	out := make([]*mail.Address, 0, len(list))
	for _, raw := range list {
		a, err := mail.ParseAddress(raw)
		if err != nil || strings.ContainsAny(a.Address, "\r\n<>") {
			return nil, &SendError{Class: ClassConfig, Permanent: true, Err: fmt.Errorf("recipient %q is not an email address: %w", raw, ErrPermanent)}
		}
		out = append(out, a)
	}
	return out, nil
}

func (s *emailSender) transmit(ctx context.Context, to []*mail.Address, data []byte) error {
	conn, err := s.dial(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	// net/smtp has no contexts: the deadline bounds every read and write,
	// and ending ctx closes the connection under it.
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	c, err := smtp.NewClient(conn, s.cfg.ServerName)
	if err != nil {
		_ = conn.Close()
		return classify("greeting", err)
	}
	defer c.Close()
	if err := c.Hello(s.cfg.HelloName); err != nil {
		return classify("ehlo", err)
	}
	if s.cfg.StartTLS != StartTLSOff {
		if ok, _ := c.Extension("STARTTLS"); ok {
			tc := &tls.Config{ServerName: s.cfg.ServerName, RootCAs: s.roots, MinVersion: tls.VersionTLS12}
			if err := c.StartTLS(tc); err != nil {
				return classify("starttls", err)
			}
		} else if s.cfg.StartTLS == StartTLSRequired {
			// Possibly stripped by someone in the middle: never fall back.
			return &SendError{Class: ClassTLS, Err: errors.New("relay does not offer STARTTLS, which --smtp-starttls=required demands")}
		}
	}
	if s.cfg.Username != "" {
		if _, isTLS := c.TLSConnectionState(); !isTLS {
			// Opportunistic mode and no STARTTLS (maybe stripped on the
			// way): retried like a required one.
			return &SendError{Class: ClassTLS, Err: errors.New("relay offers no STARTTLS; refusing to send credentials in the clear")}
		}
		if ok, mechs := c.Extension("AUTH"); !ok || !slices.Contains(strings.Fields(strings.ToUpper(mechs)), "PLAIN") {
			return &SendError{Class: ClassSMTP, Permanent: true, Err: fmt.Errorf("relay does not offer AUTH PLAIN (offers %q): %w", mechs, ErrPermanent)}
		}
		if err := c.Auth(plainAuth{username: s.cfg.Username, password: s.cfg.Password}); err != nil {
			return classify("auth", err)
		}
	}
	if err := c.Mail(s.from.Address); err != nil {
		return classify("mail from", err)
	}
	accepted := 0
	var refused []error
	for _, a := range to {
		if err := c.Rcpt(a.Address); err != nil {
			var te *textproto.Error
			if errors.As(err, &te) && te.Code >= 500 {
				// One bad address must not hold back the others.
				refused = append(refused, fmt.Errorf("rcpt %s: %w", a.Address, err))
				continue
			}
			return classify("rcpt to", err)
		}
		accepted++
	}
	if accepted == 0 {
		return fmt.Errorf("every recipient refused: %w: %w", errors.Join(refused...), ErrPermanent)
	}
	w, err := c.Data()
	if err != nil {
		return classify("data", err)
	}
	if _, err := w.Write(data); err != nil {
		return classify("data", err)
	}
	if err := w.Close(); err != nil {
		return classify("data", err)
	}
	// The relay has taken the message; a failed QUIT changes nothing.
	_ = c.Quit()
	if len(refused) > 0 {
		// Sent to the others: a retry would send them a second copy, so
		// the refusal is recorded as permanent, where the tenant sees it.
		return fmt.Errorf("delivered to %d of %d recipients: %w: %w", accepted, len(to), errors.Join(refused...), ErrPermanent)
	}
	return nil
}

// classify wraps err, marking a 5xx SMTP reply permanent.
func classify(step string, err error) error {
	var te *textproto.Error
	if errors.As(err, &te) && te.Code >= 500 {
		return fmt.Errorf("%s: %w: %w", step, err, ErrPermanent)
	}
	return fmt.Errorf("%s: %w", step, err)
}

// plainAuth is AUTH PLAIN (RFC 4616) that refuses any connection without
// TLS. net/smtp's PlainAuth also sends to a server named "localhost" in the
// clear; a relay reached through a tunnel or a proxy on loopback must not
// get the password that way either.
type plainAuth struct {
	username, password string
}

func (a plainAuth) Start(server *smtp.ServerInfo) (string, []byte, error) {
	if !server.TLS {
		return "", nil, errors.New("refusing AUTH PLAIN without TLS")
	}
	return "PLAIN", []byte("\x00" + a.username + "\x00" + a.password), nil
}

func (a plainAuth) Next(_ []byte, more bool) ([]byte, error) {
	if more {
		return nil, errors.New("unexpected server challenge")
	}
	return nil, nil
}

// compose renders the message: headers, then a multipart/alternative body
// with a plain-text part and an HTML part, both quoted-printable so that no
// line exceeds SMTP's limit whatever the alert text holds.
func (s *emailSender) compose(ch Channel, to []*mail.Address, msgs []Message, digest bool, deliveryID string) ([]byte, error) {
	now := s.now().UTC()
	sorted := slices.Clone(msgs)
	if digest {
		sortDigest(sorted)
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	hdr := []struct{ k, v string }{
		{"From", s.from.String()},
		{"To", joinAddresses(to)},
		{"Subject", mime.QEncoding.Encode("utf-8", headerValue(subject(ch, sorted, digest, now)))},
		{"Date", now.Format(time.RFC1123Z)},
		{"Message-ID", messageID(deliveryID, ch, msgs, s.from.Address)},
		{"MIME-Version", "1.0"},
		{"Content-Type", "multipart/alternative; boundary=" + mw.Boundary()},
		// RFC 3834: vacation responders must not answer.
		{"Auto-Submitted", "auto-generated"},
		{"X-Certfleet-Channel", ch.ID},
	}
	if !digest {
		hdr = append(hdr, struct{ k, v string }{"X-Certfleet-Alert-Id", msgs[0].AlertID})
	}
	var head bytes.Buffer
	for _, h := range hdr {
		if h.v == "" {
			continue
		}
		head.WriteString(h.k + ": " + headerValue(h.v) + "\r\n")
	}
	head.WriteString("\r\n")

	text := renderText(sorted, digest, now)
	var htmlBody bytes.Buffer
	if err := emailHTML.Execute(&htmlBody, htmlView(sorted, digest, now)); err != nil {
		return nil, fmt.Errorf("render html: %w", err)
	}
	for _, part := range []struct {
		ctype string
		body  []byte
	}{{"text/plain; charset=utf-8", []byte(text)}, {"text/html; charset=utf-8", htmlBody.Bytes()}} {
		pw, err := mw.CreatePart(textproto.MIMEHeader{
			"Content-Type":              {part.ctype},
			"Content-Transfer-Encoding": {"quoted-printable"},
		})
		if err != nil {
			return nil, err
		}
		qw := quotedprintable.NewWriter(pw)
		if _, err := qw.Write(part.body); err != nil {
			return nil, err
		}
		if err := qw.Close(); err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	return append(head.Bytes(), buf.Bytes()...), nil
}

// headerValue keeps a header on one line: nothing a tenant or an alert
// supplied can add a header (or end them).
func headerValue(v string) string {
	v = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, v)
	return v
}

func joinAddresses(as []*mail.Address) string {
	parts := make([]string, len(as))
	for i, a := range as {
		parts[i] = a.String()
	}
	return strings.Join(parts, ", ")
}

// messageID is stable for one delivery (or, without a delivery id, one
// channel and set of messages), so a retried send carries the same
// Message-ID and mail clients can fold a duplicate.
func messageID(deliveryID string, ch Channel, msgs []Message, from string) string {
	domain := "certfleet.invalid"
	if i := strings.LastIndexByte(from, '@'); i >= 0 && i < len(from)-1 {
		domain = from[i+1:]
	}
	if deliveryID != "" && !strings.ContainsAny(deliveryID, "<>@ \r\n") {
		return "<" + deliveryID + "@" + domain + ">"
	}
	h := sha256.New()
	io.WriteString(h, ch.ID)
	for _, m := range msgs {
		io.WriteString(h, "\x00"+m.EventID+"\x00"+m.AlertID+"\x00"+m.Status)
	}
	if len(msgs) == 1 && msgs[0].Status == StatusTest && msgs[0].EventID == "" {
		// A test without an id: each one is its own message.
		var b [8]byte
		_, _ = rand.Read(b[:])
		h.Write(b[:])
	}
	return "<" + hex.EncodeToString(h.Sum(nil)[:16]) + "@" + domain + ">"
}

// endpoint names a message's domain: host, with the port when not 443.
func endpoint(m Message) string {
	if m.Hostname == "" {
		return "(no domain)"
	}
	if m.Port != 0 && m.Port != 443 {
		return net.JoinHostPort(m.Hostname, strconv.Itoa(m.Port))
	}
	return m.Hostname
}

func label(m Message) string {
	switch m.Status {
	case StatusResolved:
		return "RESOLVED"
	case StatusTest:
		return "TEST"
	}
	if m.Severity == "" {
		return "ALERT"
	}
	return strings.ToUpper(m.Severity)
}

const maxSubject = 200

func subject(ch Channel, msgs []Message, digest bool, now time.Time) string {
	var s string
	if digest {
		s = fmt.Sprintf("[certfleet digest] %s: %s", now.Format("2006-01-02"), summary(msgs))
		if ch.Name != "" {
			s += " (" + ch.Name + ")"
		}
	} else {
		m := msgs[0]
		title := m.Title
		if title == "" {
			title = m.Kind
		}
		s = fmt.Sprintf("[%s] %s: %s", label(m), endpoint(m), title)
	}
	if len(s) > maxSubject {
		s = strings.ToValidUTF8(s[:maxSubject], "") + "..."
	}
	return s
}

// summary counts a digest's messages: "5 alerts: 2 critical, 1 warning, 1
// info, 1 resolved".
func summary(msgs []Message) string {
	counts := map[string]int{}
	for _, m := range msgs {
		counts[strings.ToLower(label(m))]++
	}
	noun := "alerts"
	if len(msgs) == 1 {
		noun = "alert"
	}
	var parts []string
	for _, k := range []string{"critical", "warning", "info", "alert", "resolved", "test"} {
		if counts[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[k], k))
		}
	}
	return fmt.Sprintf("%d %s: %s", len(msgs), noun, strings.Join(parts, ", "))
}

type emailField struct{ Name, Value string }

// fields are the facts of a message, in the order both bodies show them.
func fields(m Message) []emailField {
	var out []emailField
	add := func(name, value string) {
		if value != "" {
			out = append(out, emailField{name, value})
		}
	}
	dom := endpoint(m)
	if m.DomainID != "" {
		dom += " (domain " + m.DomainID + ")"
	}
	add("Domain", dom)
	add("Alert", strings.Trim(strings.Join([]string{m.Kind, m.Severity, m.AlertID}, ", "), ", "))
	if !m.TriggeredAt.IsZero() {
		add("Triggered", m.TriggeredAt.UTC().Format("2006-01-02 15:04:05 UTC"))
	}
	if m.ResolvedAt != nil {
		r := m.ResolvedAt.UTC().Format("2006-01-02 15:04:05 UTC")
		if m.ResolvedWhy != "" {
			r += " (" + m.ResolvedWhy + ")"
		}
		add("Resolved", r)
	}
	if m.ThresholdDays != nil {
		add("Threshold", fmt.Sprintf("%d days", *m.ThresholdDays))
	}
	add("Certificate", m.LeafSHA256)
	add("IPs", strings.Join(m.IPs, ", "))
	add("Regions", strings.Join(m.Regions, ", "))
	for _, l := range m.Links {
		add(l.Title, l.URL)
	}
	return out
}

func renderText(msgs []Message, digest bool, now time.Time) string {
	var b strings.Builder
	if digest {
		fmt.Fprintf(&b, "certfleet daily digest, %s\n%s\n\n", now.Format("2006-01-02"), summary(msgs))
	}
	for i, m := range msgs {
		if i > 0 {
			b.WriteString("\n" + strings.Repeat("-", 60) + "\n\n")
		}
		fmt.Fprintf(&b, "[%s] %s: %s\n", label(m), endpoint(m), m.Title)
		if m.Text != "" {
			b.WriteString("\n" + m.Text + "\n")
		}
		b.WriteString("\n")
		for _, f := range fields(m) {
			fmt.Fprintf(&b, "%-12s %s\n", f.Name+":", f.Value)
		}
	}
	b.WriteString("\n-- \nSent by certfleet. Change or mute this channel with /api/v1/channels.\n")
	return b.String()
}

type htmlMessage struct {
	Label, Endpoint, Title, Text string
	Fields                       []emailField
}

type htmlData struct {
	Digest   bool
	Date     string
	Summary  string
	Messages []htmlMessage
}

func htmlView(msgs []Message, digest bool, now time.Time) htmlData {
	d := htmlData{Digest: digest, Date: now.Format("2006-01-02"), Summary: summary(msgs)}
	for _, m := range msgs {
		d.Messages = append(d.Messages, htmlMessage{
			Label: label(m), Endpoint: endpoint(m), Title: m.Title, Text: m.Text, Fields: fields(m),
		})
	}
	return d
}

// emailHTML escapes everything it is given (html/template): alert text and
// host names never become markup.
var emailHTML = template.Must(template.New("email").Parse(`<!DOCTYPE html>
<html><body style="font-family:sans-serif">
{{if .Digest}}<h2>certfleet daily digest, {{.Date}}</h2><p>{{.Summary}}</p>{{end}}
{{range .Messages}}<div style="margin-bottom:1.5em">
<h3>[{{.Label}}] {{.Endpoint}}: {{.Title}}</h3>
{{if .Text}}<p>{{.Text}}</p>{{end}}
<table>{{range .Fields}}<tr><th align="left" style="padding-right:1em">{{.Name}}</th><td>{{.Value}}</td></tr>{{end}}</table>
</div>{{end}}
<p style="color:#666">Sent by certfleet.</p>
</body></html>
`))
