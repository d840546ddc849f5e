package clientca

// The OCSP responder (RFC 6960): it answers from the certificate records in
// Redis, so a revocation shows at once. Responses are signed by the CA
// itself (no delegated responder certificate: there is no second key to
// keep sealed and rotate, and every OCSP client accepts an issuer-signed
// response). They carry no nextUpdate (RFC 6960 4.2.2.1: newer status is
// always available), so clients ask again rather than cache a "good", and
// no nonce (golang.org/x/crypto/ocsp writes none; clients that send one,
// like `openssl ocsp`, warn and accept the response).

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"

	"golang.org/x/crypto/ocsp"
)

// Certificate statuses, as OCSP and CertMate's JSON name them.
const (
	StatusGood    = "good"
	StatusRevoked = "revoked"
	StatusUnknown = "unknown"
)

// CertStatus is what the CA says of a serial number at one moment.
type CertStatus struct {
	Serial *big.Int
	// Status is StatusGood, StatusRevoked or StatusUnknown (never issued
	// by this CA).
	Status string
	// TenantID and CertID name the certificate; empty when unknown.
	TenantID, CertID string
	// RevokedAt and Reason (an RFC 5280 name) are set when revoked.
	RevokedAt time.Time
	Reason    string
	// At is when the status was read (the OCSP thisUpdate).
	At time.Time
}

// Status returns the status of serial, from the certificate record: a
// revocation shows at once.
func (s *Store) Status(ctx context.Context, serial *big.Int) (CertStatus, error) {
	st := CertStatus{Serial: serial, Status: StatusUnknown, At: s.cfg.Now().UTC().Truncate(time.Second)}
	cert, err := s.BySerial(ctx, serial)
	switch {
	case errors.Is(err, ErrNotFound):
		return st, nil
	case err != nil:
		return CertStatus{}, err
	}
	st.TenantID, st.CertID, st.Status = cert.TenantID, cert.ID, StatusGood
	if cert.Revoked {
		st.Status = StatusRevoked
		if cert.RevokedAt != nil {
			st.RevokedAt = cert.RevokedAt.UTC().Truncate(time.Second)
		}
		st.Reason = cert.Reason
		if _, known := reasonCodes[st.Reason]; !known {
			st.Reason = "unspecified"
		}
	}
	return st, nil
}

// RespondOCSP answers a DER OCSP request with a DER OCSP response, signed
// by the CA. A request that does not parse gets malformedRequest; one
// about another issuer (its issuer name and key hashes are not this CA's),
// or made before the CA exists, gets unauthorized; a serial the CA never
// issued is "unknown". When the answer is internalError, the error says
// why (to log; the response is still the one to send).
func (s *Store) RespondOCSP(ctx context.Context, der []byte) ([]byte, error) {
	req, err := ocsp.ParseRequest(der)
	if err != nil {
		return ocsp.MalformedRequestErrorResponse, nil
	}
	// Whose certificate it is needs no passphrase: a replica that cannot
	// sign still says unauthorized rather than internalError to those.
	ca, auth, err := s.issuer(ctx)
	switch {
	case errors.Is(err, ErrNoCA):
		return ocsp.UnauthorizedErrorResponse, nil
	case err != nil:
		return ocsp.InternalErrorErrorResponse, err
	}
	ours, err := issuedBy(req, ca)
	if err != nil || !ours {
		return ocsp.UnauthorizedErrorResponse, nil
	}
	if auth == nil {
		return ocsp.InternalErrorErrorResponse, ErrNoPassphrase
	}
	st, err := s.Status(ctx, req.SerialNumber)
	if err != nil {
		return ocsp.InternalErrorErrorResponse, err
	}
	tmpl := ocsp.Response{
		SerialNumber: req.SerialNumber,
		ThisUpdate:   st.At,
		IssuerHash:   req.HashAlgorithm, // the CertID must match the request's
	}
	switch st.Status {
	case StatusGood:
		tmpl.Status = ocsp.Good
	case StatusRevoked:
		tmpl.Status = ocsp.Revoked
		tmpl.RevokedAt = st.RevokedAt
		tmpl.RevocationReason = ReasonCode(st.Reason)
	default:
		tmpl.Status = ocsp.Unknown
	}
	resp, err := ocsp.CreateResponse(auth.Cert, auth.Cert, tmpl, auth.Signer)
	if err != nil {
		return ocsp.InternalErrorErrorResponse, fmt.Errorf("sign OCSP response: %w", err)
	}
	return resp, nil
}

// issuedBy tells whether req asks about a certificate of the CA ca: its
// issuer name hash and key hash, computed with the request's hash, are the
// CA's (RFC 6960 4.1.1).
func issuedBy(req *ocsp.Request, ca *x509.Certificate) (bool, error) {
	h := req.HashAlgorithm
	switch h {
	case crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512:
	default:
		return false, fmt.Errorf("unsupported OCSP hash %v", h)
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(ca.RawSubjectPublicKeyInfo, &spki); err != nil {
		return false, fmt.Errorf("parse CA public key: %w", err)
	}
	name := h.New()
	name.Write(ca.RawSubject)
	key := h.New()
	key.Write(spki.PublicKey.RightAlign())
	return bytes.Equal(name.Sum(nil), req.IssuerNameHash) && bytes.Equal(key.Sum(nil), req.IssuerKeyHash), nil
}
