package events

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// namespaceRegistration is the UUIDv5 namespace of registration job and
// result ids.
var namespaceRegistration = uuid.MustParse("5d0c7a51-8a43-4b8e-9a43-6c3f0f1e2a04")

// RegistrationJobID is the id of the lookup of domain that fell due at
// dueUnixMS: a job dispatched twice for one due time has one id.
func RegistrationJobID(domain string, dueUnixMS int64) uuid.UUID {
	return uuid.NewSHA1(namespaceRegistration, []byte("job|"+domain+"|"+strconv.FormatInt(dueUnixMS, 10)))
}

// RegistrationEventID is the id of the registration.looked_up.v1 event of
// the job for domain due at scheduledAt: deterministic, so that a job done
// again after a redelivery yields the same event and storage keeps it
// once.
func RegistrationEventID(domain string, scheduledAt time.Time) uuid.UUID {
	return uuid.NewSHA1(namespaceRegistration, []byte("result|"+domain+"|"+strconv.FormatInt(scheduledAt.UnixMilli(), 10)))
}

// maxDomainLength is the longest DNS name (RFC 1035, 2.3.4).
const maxDomainLength = 253

var registrationStatuses = map[string]bool{
	RegistrationOK: true, RegistrationNoExpiry: true, RegistrationNotFound: true,
	RegistrationRateLimited: true, RegistrationError: true,
}

// DecodeRegistrationRequested decodes a lookup job and checks it: a
// lower-case domain of at most 253 characters without white space, and a
// scheduled time in the range of ClickHouse's DateTime.
func DecodeRegistrationRequested(e Envelope) (RegistrationRequestedV1, error) {
	if e.Name != RegistrationRequested {
		return RegistrationRequestedV1{}, fmt.Errorf("event %s is %s, not %s", e.EventID, e.Name, RegistrationRequested)
	}
	var j RegistrationRequestedV1
	if err := e.Decode(&j); err != nil {
		return RegistrationRequestedV1{}, err
	}
	errs := []error{checkRegistrable(j.Domain)}
	if j.ScheduledAt.IsZero() {
		errs = append(errs, errors.New("scheduled_at is required"))
	} else {
		errs = append(errs, scanTime("scheduled_at", j.ScheduledAt))
	}
	if err := errors.Join(errs...); err != nil {
		return RegistrationRequestedV1{}, fmt.Errorf("registration job %s: %w", e.EventID, err)
	}
	return j, nil
}

// DecodeRegistrationLookedUp decodes a lookup result and checks it: a
// domain as in a job, a known status, a looked_up_at in the range of
// DateTime. The registration's own dates are stored as Unix seconds and
// may be any date.
func DecodeRegistrationLookedUp(e Envelope) (RegistrationV1, error) {
	if e.Name != RegistrationLookedUp {
		return RegistrationV1{}, fmt.Errorf("event %s is %s, not %s", e.EventID, e.Name, RegistrationLookedUp)
	}
	var r RegistrationV1
	if err := e.Decode(&r); err != nil {
		return RegistrationV1{}, err
	}
	errs := []error{checkRegistrable(r.Domain)}
	if !registrationStatuses[r.Status] {
		errs = append(errs, fmt.Errorf("status %q is not a registration status", r.Status))
	}
	if r.LookedUpAt.IsZero() {
		errs = append(errs, errors.New("looked_up_at is required"))
	} else {
		errs = append(errs, scanTime("looked_up_at", r.LookedUpAt))
	}
	if r.RetryAfter != nil {
		errs = append(errs, scanTime("retry_after", *r.RetryAfter))
	}
	if err := errors.Join(errs...); err != nil {
		return RegistrationV1{}, fmt.Errorf("registration result %s: %w", e.EventID, err)
	}
	return r, nil
}

func checkRegistrable(domain string) error {
	switch {
	case domain == "":
		return errors.New("domain is required")
	case len(domain) > maxDomainLength:
		return fmt.Errorf("domain of %d characters is longer than %d", len(domain), maxDomainLength)
	case domain != strings.ToLower(domain) || strings.ContainsAny(domain, " \t\r\n/{}") || strings.HasSuffix(domain, "."):
		return fmt.Errorf("domain %q is not a lower-case name without a final dot", domain)
	}
	return nil
}
