package events

import "time"

// Registration lookups: the registration (registrar, expiry, ...) of a
// registrable domain (eTLD+1), looked up once per interval for every host,
// tenant and region that shares it.
const (
	// RegistrationRequested is a lookup job on StreamRegistrationJobs,
	// written by the coordinator, read by one worker group.
	RegistrationRequested = "registration.requested.v1"
	// RegistrationLookedUp is a lookup's result, on the event stream of
	// the registrable domain's partition (TenantID empty: it is no
	// tenant's, every tenant monitoring a host under it reads it).
	RegistrationLookedUp = "registration.looked_up.v1"
)

// StreamRegistrationJobs carries registration.requested.v1 jobs.
const StreamRegistrationJobs = "registration:jobs"

// Registration lookup statuses.
const (
	// RegistrationOK: the registry answered with the registration.
	RegistrationOK = "ok"
	// RegistrationNoExpiry: the registry answered but publishes no expiry
	// (e.g. .de): ExpiresAt is nil, never a guessed date.
	RegistrationNoExpiry = "no-expiry"
	// RegistrationNotFound: the registry has no such domain (RDAP 404,
	// WHOIS "no match").
	RegistrationNotFound = "not-found"
	// RegistrationRateLimited: the server answered 429 or its WHOIS
	// equivalent; retried after RetryAfter.
	RegistrationRateLimited = "rate-limited"
	// RegistrationError: no usable answer (timeout, malformed answer,
	// refused address, no server for the TLD); Detail says which.
	RegistrationError = "error"
)

// RegistrationRequestedV1 asks for one lookup of Domain.
type RegistrationRequestedV1 struct {
	// Domain is the registrable domain, lower-case A-labels, no dot at
	// the end.
	Domain string `json:"domain"`
	// ScheduledAt is the job's due time: with Domain, it names the job.
	ScheduledAt time.Time `json:"scheduled_at"`
}

// RegistrationV1 is what one lookup of a registrable domain found.
type RegistrationV1 struct {
	Domain string `json:"domain"`
	// Status is one of the Registration* statuses; Detail says why when it
	// is not ok (a fixed vocabulary: "timeout", "malformed-answer",
	// "no-server", "blocked-target", "too-large", ...).
	Status string `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Source is "rdap" or "whois"; Server the URL or host:port that gave
	// the answer (after redirects and referrals).
	Source string `json:"source,omitempty"`
	Server string `json:"server,omitempty"`
	// Registrar is the sponsoring registrar's name.
	Registrar string `json:"registrar,omitempty"`
	// CreatedAt, ExpiresAt and UpdatedAt are the registration's dates as
	// the registry gives them; nil when it gives none.
	CreatedAt *time.Time `json:"created_at,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
	// Statuses are the EPP/RDAP statuses ("client transfer prohibited", ...).
	Statuses []string `json:"statuses,omitempty"`
	// NameServers are lower-case host names.
	NameServers []string `json:"name_servers,omitempty"`
	// LookedUpAt is when the answer came.
	LookedUpAt time.Time `json:"looked_up_at"`
	// RetryAfter is when to try again after a rate-limited or failed
	// lookup; nil otherwise.
	RetryAfter *time.Time `json:"retry_after,omitempty"`
}
