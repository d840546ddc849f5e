// Package claimlink makes and opens the signed links certfleet mails: the
// links that approve a claimed KeyChest key from the account's mailbox
// (Claim), and the links that confirm an email channel's recipient
// (Recipient: the address's owner agrees to receive the account's alerts).
// The notifier mails a link (it has the SMTP relay); the API server opens
// the link's token and acts (it has the accounts and channels). They share
// no state but the operator's secrets passphrase: a token is what it
// approves and its expiry sealed with a key derived from it
// (internal/seal), bound to its kind by the additional data, so nothing
// secret is stored, a token cannot be forged or altered without the
// passphrase, and a claim's token is no recipient's. Approving and
// confirming are idempotent, so a token used twice acts once; it stops
// working when it expires.
package claimlink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/internal/printable"
	"github.com/certfleet/certfleet/internal/seal"
)

// DefaultTTL is how long a link works.
const DefaultTTL = 72 * time.Hour

// saltKey holds the scrypt salt of the link key, created once.
const saltKey = "claimlink:seal:salt"

// aad and recipientAAD bind sealed tokens to their use of the
// passphrase: a claim's token does not open as a recipient's.
var (
	aad          = []byte("certfleet claim link v1")
	recipientAAD = []byte("certfleet recipient link v1")
)

// Errors of Open and OpenRecipient.
var (
	ErrInvalid          = errors.New("this approval link is not valid; ask for a new claim")
	ErrExpired          = errors.New("this approval link has expired; claim the key again for a new link")
	ErrRecipientInvalid = errors.New("this confirmation link is not valid; ask the account for a new one")
	ErrRecipientExpired = errors.New("this confirmation link has expired; ask the account for a new one")
)

// maxToken is the longest token opened: a sealed claim or recipient is far
// shorter, and a longer one is not worth decoding.
const maxToken = 1024

// Claim is what a link approves.
type Claim struct {
	TenantID  string    `json:"t"`
	KeyID     string    `json:"k"`
	ExpiresAt time.Time `json:"e"`
}

// Links seals and opens tokens.
type Links struct {
	keys *seal.Keyring
	now  func() time.Time
}

// New returns the links of passphrase (empty: Enabled is false), its key's
// salt kept in rdb.
func New(passphrase string, rdb redis.UniversalClient, now func() time.Time) *Links {
	if now == nil {
		now = time.Now
	}
	return &Links{keys: seal.NewKeyring(passphrase, rdb, saltKey, nil), now: now}
}

// Token seals c.
func (l *Links) Token(ctx context.Context, c Claim) (string, error) {
	return l.seal(ctx, c, aad)
}

// Open returns the claim of a token, or ErrInvalid or ErrExpired.
func (l *Links) Open(ctx context.Context, token string) (Claim, error) {
	plain, err := l.open(ctx, token, aad)
	if errors.Is(err, errUnsealed) {
		return Claim{}, ErrInvalid
	}
	if err != nil {
		return Claim{}, err
	}
	var c Claim
	if err := json.Unmarshal(plain, &c); err != nil || c.TenantID == "" || c.KeyID == "" {
		return Claim{}, ErrInvalid
	}
	if !l.now().Before(c.ExpiresAt) {
		return Claim{}, ErrExpired
	}
	return c, nil
}

// Recipient is what a confirmation link confirms: that Address agrees to
// receive the alerts of the account TenantID's email channels.
type Recipient struct {
	TenantID  string    `json:"t"`
	Address   string    `json:"a"`
	ExpiresAt time.Time `json:"e"`
}

// RecipientToken seals r.
func (l *Links) RecipientToken(ctx context.Context, r Recipient) (string, error) {
	return l.seal(ctx, r, recipientAAD)
}

// OpenRecipient returns the recipient of a token, or ErrRecipientInvalid
// or ErrRecipientExpired.
func (l *Links) OpenRecipient(ctx context.Context, token string) (Recipient, error) {
	plain, err := l.open(ctx, token, recipientAAD)
	if errors.Is(err, errUnsealed) {
		return Recipient{}, ErrRecipientInvalid
	}
	if err != nil {
		return Recipient{}, err
	}
	return ParseRecipient(plain, l.now())
}

// ParseRecipient reads an opened recipient token: a tenant id (a UUID),
// a bare email address of at most 254 bytes without a control character,
// and an expiry after now; anything else is ErrRecipientInvalid, a
// token past its expiry ErrRecipientExpired. A token is only ever sealed
// by certfleet, but its parse is held to what the confirmation acts on.
func ParseRecipient(plain []byte, now time.Time) (Recipient, error) {
	var r Recipient
	if err := json.Unmarshal(plain, &r); err != nil {
		return Recipient{}, ErrRecipientInvalid
	}
	if id, err := uuid.Parse(r.TenantID); err != nil || id.String() != r.TenantID {
		return Recipient{}, ErrRecipientInvalid
	}
	a, err := mail.ParseAddress(r.Address)
	if err != nil || a.Address != r.Address || a.Name != "" || len(r.Address) > 254 || printable.HasControl(r.Address) {
		return Recipient{}, ErrRecipientInvalid
	}
	if !now.Before(r.ExpiresAt) {
		return Recipient{}, ErrRecipientExpired
	}
	return r, nil
}

// errUnsealed is a token that does not open with this kind's data.
var errUnsealed = errors.New("token does not open")

// seal seals v's JSON bound to aad. Sealed values are "v1." + base64url:
// already safe in a URL path.
func (l *Links) seal(ctx context.Context, v any, aad []byte) (string, error) {
	box, err := l.keys.Box(ctx)
	if err != nil {
		return "", fmt.Errorf("link key: %w", err)
	}
	plain, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return box.Seal(plain, aad)
}

// open opens a token sealed with aad, or fails with errUnsealed.
func (l *Links) open(ctx context.Context, token string, aad []byte) ([]byte, error) {
	if len(token) > maxToken || !strings.HasPrefix(token, "v1.") {
		return nil, errUnsealed
	}
	box, err := l.keys.Box(ctx)
	if err != nil {
		return nil, fmt.Errorf("link key: %w", err)
	}
	plain, err := box.Open(token, aad)
	if err != nil {
		return nil, errUnsealed
	}
	return plain, nil
}
