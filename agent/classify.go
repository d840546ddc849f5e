package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"reflect"
	"strconv"
	"syscall"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/guard"
)

// errTooLarge ends a handshake whose server sent more than maxHandshakeBytes.
var errTooLarge = errors.New("server sent too much during the handshake")

// Phases a connection error can come from; they become the detail of a
// timeout and decide what an unknown error counts as.
const (
	phaseConnect   = "connect"
	phaseHandshake = "handshake"
)

// classify maps an error to an outcome and a detail from a fixed
// vocabulary: results never carry error text, which would differ between
// Go versions and leak local details.
func classify(phase string, err error) (events.Outcome, string) {
	var be *guard.BlockedError
	if errors.As(err, &be) {
		return events.OutcomeBlockedTarget, be.Reason
	}
	if errors.Is(err, errTooLarge) {
		return events.OutcomeHandshakeError, "too-large"
	}
	if errors.Is(err, context.Canceled) {
		return events.OutcomeInternalError, "canceled"
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, syscall.ETIMEDOUT) || (errors.As(err, &ne) && ne.Timeout()) {
		return events.OutcomeTimeout, phase
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ECONNREFUSED:
			return events.OutcomeConnectionRefused, ""
		case syscall.ECONNRESET, syscall.ECONNABORTED, syscall.EPIPE:
			return events.OutcomeConnectionReset, phase
		case syscall.EHOSTUNREACH, syscall.EHOSTDOWN:
			return events.OutcomeUnreachable, "host-unreachable"
		case syscall.ENETUNREACH, syscall.ENETDOWN:
			return events.OutcomeUnreachable, "network-unreachable"
		case syscall.EADDRNOTAVAIL, syscall.EAFNOSUPPORT:
			return events.OutcomeUnreachable, "address-not-available"
		}
	}
	if code, remote, ok := tlsAlert(err); ok {
		if remote {
			return events.OutcomeHandshakeError, alertName(code)
		}
		return events.OutcomeHandshakeError, "local-" + alertName(code)
	}
	var rhe tls.RecordHeaderError
	if errors.As(err, &rhe) {
		return events.OutcomeHandshakeError, "not-tls"
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return events.OutcomeHandshakeError, "eof"
	}
	if phase == phaseConnect {
		return events.OutcomeInternalError, "dial"
	}
	return events.OutcomeHandshakeError, "other"
}

// tlsAlert finds a TLS alert in err. crypto/tls reports alerts on TCP as a
// *net.OpError ("remote error" for alerts the server sent, "local error"
// for those it sent itself) around its unexported alert type, a uint8;
// tls.AlertError is only used for QUIC. The type is recognised by package
// and kind, never by error text.
func tlsAlert(err error) (code uint8, remote, ok bool) {
	var ae tls.AlertError
	if errors.As(err, &ae) {
		return uint8(ae), true, true
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Err == nil {
		return 0, false, false
	}
	v := reflect.ValueOf(oe.Err)
	if v.Kind() != reflect.Uint8 || v.Type().PkgPath() != "crypto/tls" {
		return 0, false, false
	}
	return uint8(v.Uint()), oe.Op == "remote error", true
}

// alertName is the RFC 8446 name of a TLS alert in kebab case.
func alertName(code uint8) string {
	if n, ok := alertNames[code]; ok {
		return n
	}
	return "alert-" + strconv.Itoa(int(code))
}

var alertNames = map[uint8]string{
	0: "close-notify", 10: "unexpected-message", 20: "bad-record-mac", 21: "decryption-failed",
	22: "record-overflow", 40: "handshake-failure", 42: "bad-certificate",
	43: "unsupported-certificate", 44: "certificate-revoked", 45: "certificate-expired",
	46: "certificate-unknown", 47: "illegal-parameter", 48: "unknown-ca", 49: "access-denied",
	50: "decode-error", 51: "decrypt-error", 70: "protocol-version", 71: "insufficient-security",
	80: "internal-error", 86: "inappropriate-fallback", 90: "user-canceled", 100: "no-renegotiation",
	109: "missing-extension", 110: "unsupported-extension", 112: "unrecognized-name",
	113: "bad-certificate-status-response", 115: "unknown-psk-identity",
	116: "certificate-required", 120: "no-application-protocol", 121: "ech-required",
}

// verifyDetail names why a chain did not verify.
func verifyDetail(err error, leaf *x509.Certificate, now time.Time) string {
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return "unknown-authority"
	}
	var ci x509.CertificateInvalidError
	if errors.As(err, &ci) {
		switch ci.Reason {
		case x509.Expired:
			// Go reports both ends of the validity window as Expired; the
			// error may also be about an intermediate.
			if now.Before(leaf.NotBefore) {
				return "not-yet-valid"
			}
			return "expired"
		case x509.NotAuthorizedToSign:
			return "not-authorized-to-sign"
		case x509.CANotAuthorizedForThisName, x509.NameConstraintsWithoutSANs,
			x509.UnconstrainedName, x509.TooManyConstraints:
			return "name-constraints"
		case x509.TooManyIntermediates:
			return "too-many-intermediates"
		case x509.IncompatibleUsage, x509.CANotAuthorizedForExtKeyUsage:
			return "incompatible-usage"
		}
		return "invalid-certificate"
	}
	var se x509.SystemRootsError
	if errors.As(err, &se) {
		return "no-roots"
	}
	var ia x509.InsecureAlgorithmError
	if errors.As(err, &ia) {
		return "insecure-algorithm"
	}
	return "chain-invalid"
}
