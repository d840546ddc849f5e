package events

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"
)

// Limits of the values a scan job or result may carry: each is what its
// ClickHouse column holds (port and key bits UInt16, chain length UInt8,
// timings UInt32 milliseconds, scan times DateTime). A value past its
// limit is refused where the event is decoded, never wrapped or clamped
// into a plausible one.
const (
	MaxPort        = math.MaxUint16
	MaxChainLength = math.MaxUint8
	MaxKeyBits     = math.MaxUint16
	MaxHTTPStatus  = 999
	MaxMillis      = math.MaxUint32
)

// Scan times (scheduled, started, finished) must fall in the range of
// ClickHouse's DateTime, which is where they are stored: 1970 to early 2106.
var (
	minScanTime = time.Unix(0, 0).UTC()
	maxScanTime = time.Unix(math.MaxUint32, 0).UTC()
)

// NoExpiry is the notAfter RFC 5280 (4.1.2.5) gives a certificate that has
// no well-defined expiration date: GeneralizedTime 99991231235959Z.
var NoExpiry = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// HasNoExpiry tells whether the certificate seen has no well-defined
// expiration (its notAfter is NoExpiry): it is shown as "no expiry", never
// as a date or a number of days.
func (r IPResult) HasNoExpiry() bool {
	return r.CertificateFound && r.NotAfter.Equal(NoExpiry)
}

// DecodeScanRequested decodes a scan job and checks it: a job id, a host,
// and a port of 0 (the default, 443) to MaxPort.
func DecodeScanRequested(e Envelope) (ScanRequestedV1, error) {
	if e.Name != ScanRequested {
		return ScanRequestedV1{}, fmt.Errorf("event %s is %s, not %s", e.EventID, e.Name, ScanRequested)
	}
	var j ScanRequestedV1
	if err := e.Decode(&j); err != nil {
		return ScanRequestedV1{}, err
	}
	var errs []error
	if j.JobID == uuid.Nil {
		errs = append(errs, errors.New("job id is required"))
	}
	if j.Host == "" {
		errs = append(errs, errors.New("host is required"))
	}
	errs = append(errs, inRange("port", int64(j.Port), 0, MaxPort))
	if err := errors.Join(errs...); err != nil {
		return ScanRequestedV1{}, fmt.Errorf("scan job %s: %w", e.EventID, err)
	}
	return j, nil
}

// DecodeScanCompleted decodes a scan result and checks that every value
// fits the field that stores it (see the Max constants): a result that
// does not is refused as a whole, with every problem named.
func DecodeScanCompleted(e Envelope) (ScanCompletedV1, error) {
	if e.Name != ScanCompleted {
		return ScanCompletedV1{}, fmt.Errorf("event %s is %s, not %s", e.EventID, e.Name, ScanCompleted)
	}
	var p ScanCompletedV1
	if err := e.Decode(&p); err != nil {
		return ScanCompletedV1{}, err
	}
	if err := p.validate(); err != nil {
		return ScanCompletedV1{}, fmt.Errorf("scan result %s: %w", e.EventID, err)
	}
	return p, nil
}

func (p ScanCompletedV1) validate() error {
	errs := []error{
		inRange("port", int64(p.Port), 0, MaxPort),
		scanTime("started_at", p.StartedAt),
		scanTime("finished_at", p.FinishedAt),
	}
	errs = append(errs, scanTime("scheduled_at", p.ScheduledAt), inRange("skipped_ips", int64(p.SkippedIPs), 0, math.MaxInt32))
	for i, r := range p.Results {
		if err := r.validate(); err != nil {
			errs = append(errs, fmt.Errorf("result %d: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

func (r IPResult) validate() error {
	return errors.Join(
		inRange("chain_length", int64(r.ChainLength), 0, MaxChainLength),
		inRange("key_bits", int64(r.KeyBits), 0, MaxKeyBits),
		inRange("http_status", int64(r.HTTPStatus), 0, MaxHTTPStatus),
		inRange("hsts_max_age", r.HSTSMaxAge, 0, math.MaxInt64),
		inRange("connect_ms", r.ConnectMS, 0, MaxMillis),
		inRange("handshake_ms", r.HandshakeMS, 0, MaxMillis),
	)
}

func inRange(field string, v, lo, hi int64) error {
	if v < lo || v > hi {
		return fmt.Errorf("%s %d is outside %d..%d", field, v, lo, hi)
	}
	return nil
}

// scanTime checks a scan time; zero is allowed and means not recorded
// (events that predate the field).
func scanTime(field string, t time.Time) error {
	if t.IsZero() {
		return nil
	}
	if t.Before(minScanTime) || t.After(maxScanTime) {
		return fmt.Errorf("%s %s is outside %s..%s", field, t.Format(time.RFC3339), minScanTime.Format(time.RFC3339), maxScanTime.Format(time.RFC3339))
	}
	return nil
}
