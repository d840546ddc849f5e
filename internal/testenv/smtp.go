package testenv

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// The test SMTP server is github.com/emersion/go-smtp's server rather than
// one written here: the notifier's client (net/smtp) is then tested against
// an independent, widely used implementation of the protocol, STARTTLS and
// AUTH, not against a mirror of its own assumptions.

// SMTPOptions configures a test SMTP server.
type SMTPOptions struct {
	// StartTLS offers STARTTLS with a certificate for 127.0.0.1 and
	// localhost, signed by the server's own root (SMTPServer.RootPEM).
	StartTLS bool
	// Users are the AUTH PLAIN accounts, username to password; none means
	// the server offers no AUTH and accepts mail from anyone.
	Users map[string]string
	// AllowInsecureAuth offers AUTH before STARTTLS too, as a careless
	// relay would: a client must still refuse to send its password.
	AllowInsecureAuth bool
	// FailRcpt makes every RCPT TO fail with this permanent error when set.
	FailRcpt string
	// RefuseRcpt is one address whose RCPT TO fails permanently (a mailbox
	// that does not exist), the others being accepted.
	RefuseRcpt string
}

// SMTPMessage is one message the test server accepted.
type SMTPMessage struct {
	// From is the envelope sender (MAIL FROM).
	From string
	// To are the envelope recipients (RCPT TO), in order.
	To []string
	// Data is the message as sent after DATA, headers and body.
	Data []byte
	// TLS tells whether the session had done STARTTLS.
	TLS bool
	// User is the authenticated username, empty without AUTH.
	User string
}

// SMTPServer is a running test SMTP server on 127.0.0.1.
type SMTPServer struct {
	// Addr is host:port.
	Addr string
	// RootPEM is the PEM root the STARTTLS certificate chains to.
	RootPEM []byte

	opts     SMTPOptions
	mu       sync.Mutex
	messages []SMTPMessage
	authFail int
	authSeen int
}

// SMTP starts an SMTP server on a free loopback port, stopped when the test
// ends.
func SMTP(t testing.TB, opts SMTPOptions) *SMTPServer {
	t.Helper()
	s := &SMTPServer{opts: opts}
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = "localhost"
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	srv.MaxMessageBytes = 1 << 20
	srv.MaxRecipients = 50
	srv.AllowInsecureAuth = opts.AllowInsecureAuth
	if opts.StartTLS {
		root := NewCA(t, "certfleet test smtp root")
		cert := root.Issue(t, []string{"localhost", "127.0.0.1"}, nil)
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		s.RootPEM = root.PEM()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("smtp listen: %v", err)
	}
	s.Addr = l.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); err != nil && !errors.Is(err, smtp.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			t.Logf("smtp server: %v", err)
		}
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = srv.Close()
		// Close misses a listener Serve has not registered yet (a test
		// that never connected): close it here too.
		_ = l.Close()
		<-done
	})
	return s
}

// Messages returns the messages accepted so far.
func (s *SMTPServer) Messages() []SMTPMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]SMTPMessage(nil), s.messages...)
}

// AuthAttempts returns how many AUTH exchanges the server saw and how many
// of them it refused.
func (s *SMTPServer) AuthAttempts() (seen, refused int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authSeen, s.authFail
}

// WaitMessages waits until at least n messages arrived or d passed, and
// returns what arrived.
func (s *SMTPServer) WaitMessages(n int, d time.Duration) []SMTPMessage {
	deadline := time.Now().Add(d)
	for {
		msgs := s.Messages()
		if len(msgs) >= n || time.Now().After(deadline) {
			return msgs
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *SMTPServer) newSession(c *smtp.Conn) (smtp.Session, error) {
	return &smtpSession{srv: s, conn: c}, nil
}

type smtpSession struct {
	srv  *SMTPServer
	conn *smtp.Conn
	user string
	from string
	to   []string
}

func (ss *smtpSession) AuthMechanisms() []string {
	if len(ss.srv.opts.Users) == 0 {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *smtpSession) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain || len(ss.srv.opts.Users) == 0 {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		ss.srv.mu.Lock()
		defer ss.srv.mu.Unlock()
		ss.srv.authSeen++
		want, ok := ss.srv.opts.Users[username]
		if !ok || want != password || (identity != "" && identity != username) {
			ss.srv.authFail++
			return smtp.ErrAuthFailed
		}
		ss.user = username
		return nil
	}), nil
}

func (ss *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	if len(ss.srv.opts.Users) > 0 && ss.user == "" {
		return smtp.ErrAuthRequired
	}
	ss.from = from
	return nil
}

func (ss *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if ss.srv.opts.FailRcpt != "" {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: ss.srv.opts.FailRcpt}
	}
	if ss.srv.opts.RefuseRcpt != "" && strings.EqualFold(to, ss.srv.opts.RefuseRcpt) {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such mailbox"}
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *smtpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	_, isTLS := ss.conn.TLSConnectionState()
	ss.srv.mu.Lock()
	ss.srv.messages = append(ss.srv.messages, SMTPMessage{
		From: ss.from, To: append([]string(nil), ss.to...), Data: bytes.Clone(b), TLS: isTLS, User: ss.user,
	})
	ss.srv.mu.Unlock()
	return nil
}

func (ss *smtpSession) Reset() { ss.from, ss.to = "", nil }

func (ss *smtpSession) Logout() error { return nil }
