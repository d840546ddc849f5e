package notifier

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"unicode"

	"github.com/certfleet/certfleet/internal/channels"
	"github.com/certfleet/certfleet/internal/guard"
)

// Error classes of a failed attempt: a fixed vocabulary, never raw error
// text, so attempts can be counted and filtered.
const (
	ClassTimeout        = "timeout"
	ClassRefusedTarget  = "refused_target"
	ClassDNS            = "dns"
	ClassConnect        = "connect"
	ClassTLS            = "tls"
	ClassHTTP4xx        = "http_4xx"
	ClassHTTP5xx        = "http_5xx"
	ClassRedirect       = "redirect"
	ClassSecret         = "secret"
	ClassConfig         = "config"
	ClassChannelDeleted = "channel_deleted"
	ClassSMTP           = "smtp"
	ClassOther          = "other"
)

// SendError is a failed send with its class. Senders return it (or an
// error wrapping ErrPermanent, or a plain error classified by its type).
type SendError struct {
	// Class is one of the Class* constants.
	Class string
	// HTTPStatus is the receiver's answer, 0 when there was none.
	HTTPStatus int
	// Permanent stops the retries: no later attempt can succeed.
	Permanent bool
	// Err is the cause.
	Err error
}

func (e *SendError) Error() string { return e.Err.Error() }
func (e *SendError) Unwrap() error { return e.Err }

// classifySend names what went wrong with a send.
func classifySend(err error) (class string, status int, permanent bool) {
	var se *SendError
	var be *guard.BlockedError
	var dns *net.DNSError
	var op *net.OpError
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	var ve *tls.CertificateVerificationError
	var ae tls.AlertError
	var rh tls.RecordHeaderError
	var smtpErr *textproto.Error
	switch {
	case errors.As(err, &se):
		return se.Class, se.HTTPStatus, se.Permanent
	case errors.As(err, &be):
		// The operator's policy refuses the address; only a new
		// --allow-targets could change that, and retrying hides it.
		return ClassRefusedTarget, 0, true
	case errors.Is(err, channels.ErrNoPassphrase):
		return ClassSecret, 0, false
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return ClassTimeout, 0, false
	case errors.As(err, &dns):
		return ClassDNS, 0, dns.IsNotFound
	case errors.As(err, &ve), errors.As(err, &ua), errors.As(err, &he), errors.As(err, &ci),
		errors.As(err, &ae), errors.As(err, &rh):
		return ClassTLS, 0, false
	case errors.As(err, &smtpErr):
		return ClassSMTP, 0, errors.Is(err, ErrPermanent)
	case errors.As(err, &op) && op.Op == "dial":
		return ClassConnect, 0, false
	case errors.Is(err, ErrPermanent):
		return ClassOther, 0, true
	}
	return ClassOther, 0, false
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// maxRequestBytes caps what certfleet POSTs (a digest of many alerts).
const maxRequestBytes = 1 << 20

// postJSON POSTs body to target with the headers and turns the answer into a
// SendError unless it is 2xx. At most maxResp bytes of the answer are read.
func postJSON(ctx context.Context, client *http.Client, target string, body []byte, header http.Header, maxResp int64) error {
	if len(body) > maxRequestBytes {
		return &SendError{Class: ClassConfig, Permanent: true, Err: fmt.Errorf("message of %d bytes exceeds %d", len(body), maxRequestBytes)}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return &SendError{Class: ClassConfig, Permanent: true, Err: fmt.Errorf("build request: %w", err)}
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "certfleet-notifier/1")
	resp, err := client.Do(req)
	if err != nil {
		// Go's error names the URL, whose path is a Slack webhook's
		// secret: the attempt's error (which read keys list) and the
		// logs carry it redacted, as the events do.
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = channels.RedactURL(ue.URL)
		}
		return fmt.Errorf("post: %w", err)
	}
	defer resp.Body.Close()
	excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, maxResp))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResp)) // let the connection be reused
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return nil
	case code >= 300 && code < 400:
		return &SendError{Class: ClassRedirect, HTTPStatus: code, Permanent: true,
			Err: fmt.Errorf("receiver answered %d (redirects are not followed): %s", code, shorten(excerpt))}
	case code >= 500, code == http.StatusRequestTimeout, code == http.StatusTooManyRequests:
		class := ClassHTTP5xx
		if code < 500 {
			class = ClassHTTP4xx
		}
		return &SendError{Class: class, HTTPStatus: code, Err: fmt.Errorf("receiver answered %d: %s", code, shorten(excerpt))}
	default:
		// 4xx: the receiver refuses this request; the same one will be
		// refused again.
		return &SendError{Class: ClassHTTP4xx, HTTPStatus: code, Permanent: true,
			Err: fmt.Errorf("receiver answered %d: %s", code, shorten(excerpt))}
	}
}

// shorten keeps a receiver's answer printable and short for the record.
func shorten(b []byte) string {
	s := strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, string(b))
	s = strings.TrimSpace(s)
	if r := []rune(s); len(r) > 200 {
		s = string(r[:200]) + "..."
	}
	if s == "" {
		return "(empty body)"
	}
	return s
}
