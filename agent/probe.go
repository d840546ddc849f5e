package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"

	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
)

// maxHTTPBytes caps what a server may send, TLS records included, in answer
// to the HEAD request: a status line and headers need a few KiB.
const maxHTTPBytes = 64 << 10

// userAgent names the scanner in the HEAD requests it sends.
const userAgent = "certfleet-agent (TLS certificate monitor)"

// legacyVersions are what the legacy probe offers: TLS 1.0 and 1.1, which
// browsers no longer accept (RFC 8996).
var legacyVersions = [2]uint16{tls.VersionTLS10, tls.VersionTLS11}

// legacySuites are every cipher suite crypto/tls implements for TLS 1.0 and
// 1.1, insecure ones included: servers that still speak those versions often
// offer only RSA key exchange or 3DES, which crypto/tls leaves out by
// default, and the probe asks whether the server accepts the protocol, not
// whether it has a good suite for it.
var legacySuites = func() []uint16 {
	var out []uint16
	for _, cs := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		if slices.ContainsFunc(cs.SupportedVersions, func(v uint16) bool { return slices.Contains(legacyVersions[:], v) }) {
			out = append(out, cs.ID)
		}
	}
	return out
}()

// connKey carries the connection an HTTP probe runs on to the transport's
// dial function.
type connKey struct{}

// newHTTPTransport returns the transport of the HTTP probes. It never dials:
// its "dial" hands back the connection of the scan, whose handshake is
// done, and net/http speaks HTTP/2 on it when ALPN chose h2 and HTTP/1.1
// otherwise. No proxy, no compression, headers capped.
func newHTTPTransport() *http.Transport {
	t := &http.Transport{
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, ok := ctx.Value(connKey{}).(*tls.Conn)
			if !ok {
				return nil, errors.New("no scanned connection in context")
			}
			return c, nil
		},
		DisableCompression:     true,
		MaxResponseHeaderBytes: maxHTTPBytes,
		Protocols:              new(http.Protocols),
	}
	t.Protocols.SetHTTP1(true)
	t.Protocols.SetHTTP2(true)
	return t
}

// probeHTTP sends HEAD / to the server over conn, the scan's TLS connection,
// and records the status and the Strict-Transport-Security header. A server
// that does not answer HTTP in time leaves HTTPStatus 0; the scan's outcome
// does not change.
func (s *Scanner) probeHTTP(ctx context.Context, conn *tls.Conn, lc *limitConn, host string, port int, r *events.IPResult) {
	lc.left = maxHTTPBytes
	ctx, cancel := context.WithTimeout(ctx, s.cfg.HTTPTimeout)
	defer cancel()
	if d, ok := ctx.Deadline(); ok {
		_ = lc.Conn.SetDeadline(d)
	}
	authority := authority(host, port)
	cc, err := s.http.NewClientConn(context.WithValue(ctx, connKey{}, conn), "https", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		s.noHTTP(err)
		return
	}
	defer cc.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, "https://"+authority+"/", nil)
	if err != nil {
		s.noHTTP(err)
		return
	}
	req.Header.Set("User-Agent", userAgent)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		s.noHTTP(err)
		return
	}
	_ = resp.Body.Close()
	httpProbes[true].Inc()
	r.HTTPStatus = resp.StatusCode
	// RFC 6797 8.1: only the first header counts.
	if v := resp.Header.Values("Strict-Transport-Security"); len(v) > 0 {
		r.HSTSMaxAge, r.HSTSIncludeSubdomains, _ = parseHSTS(v[0])
	}
}

func (s *Scanner) noHTTP(err error) {
	httpProbes[false].Inc()
	s.logger.Debug("no http answer", zap.Error(err))
}

// authority is host with the port when it is not 443, as a browser writes
// the Host header; an IPv6 literal gets its brackets.
func authority(host string, port int) string {
	if port != 443 {
		return net.JoinHostPort(host, strconv.Itoa(port))
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is6() {
		return "[" + host + "]"
	}
	return host
}

// legacyWorthTrying tells whether the main scan reached a TLS server (or a
// server that hung up on the ClientHello, as some do on a version they
// dislike), so that a handshake offering TLS 1.0-1.1 says something.
func legacyWorthTrying(o events.Outcome) bool {
	return o == events.OutcomeOK || o == events.OutcomeHandshakeError || o == events.OutcomeConnectionReset
}

// probeLegacy does a second handshake offering only TLS 1.0 and 1.1. It
// sets LegacyTLSChecked when the server gave an answer (a handshake, an
// alert, a hang-up) and lists the version it agreed on in LegacyTLS. A
// timeout or a failed connect leaves the question open.
func (s *Scanner) probeLegacy(ctx context.Context, host string, port int, ip netip.Addr, r *events.IPResult) {
	conn, _, phase, err := s.dialTLS(ctx, ip, port, &tls.Config{
		ServerName:         host,
		InsecureSkipVerify: true, // only the version matters
		NextProtos:         alpn,
		MinVersion:         legacyVersions[0],
		MaxVersion:         legacyVersions[len(legacyVersions)-1],
		CipherSuites:       legacySuites,
		CurvePreferences:   s.curves,
	}, nil)
	if err != nil {
		if o, _ := classify(phase, err); phase == phaseConnect || o == events.OutcomeTimeout || o == events.OutcomeInternalError {
			legacyProbes[legacyFailed].Inc()
			return
		}
		legacyProbes[legacyRefused].Inc()
		r.LegacyTLSChecked = true
		return
	}
	defer conn.Close()
	r.LegacyTLSChecked = true
	legacyProbes[legacyAccepted].Inc()
	r.LegacyTLS = []string{tls.VersionName(conn.ConnectionState().Version)}
}
