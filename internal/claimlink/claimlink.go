// Package claimlink makes and opens the links that approve a claimed
// KeyChest key from the account's mailbox. The notifier mails a link when
// a held key is claimed (it has the SMTP relay); the API server opens the
// link's token and approves the key (it has the accounts). They share no
// state but the operator's secrets passphrase: a token is the tenant, key
// id and expiry sealed with a key derived from it (internal/seal), so
// nothing secret is stored, and a token cannot be forged or altered
// without the passphrase. Approving is idempotent, so a token used twice
// approves once; it stops working when it expires.
package claimlink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/internal/seal"
)

// DefaultTTL is how long a link works.
const DefaultTTL = 72 * time.Hour

// saltKey holds the scrypt salt of the link key, created once.
const saltKey = "claimlink:seal:salt"

// aad binds sealed tokens to this use of the passphrase.
var aad = []byte("certfleet claim link v1")

// Errors of Open.
var (
	ErrInvalid = errors.New("this approval link is not valid; ask for a new claim")
	ErrExpired = errors.New("this approval link has expired; claim the key again for a new link")
)

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
	box, err := l.keys.Box(ctx)
	if err != nil {
		return "", fmt.Errorf("claim link key: %w", err)
	}
	plain, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	sealed, err := box.Seal(plain, aad)
	if err != nil {
		return "", err
	}
	// Sealed values are "v1." + base64url: already safe in a URL path.
	return sealed, nil
}

// Open returns the claim of a token, or ErrInvalid or ErrExpired.
func (l *Links) Open(ctx context.Context, token string) (Claim, error) {
	if len(token) > 1024 || !strings.HasPrefix(token, "v1.") {
		return Claim{}, ErrInvalid
	}
	box, err := l.keys.Box(ctx)
	if err != nil {
		return Claim{}, fmt.Errorf("claim link key: %w", err)
	}
	plain, err := box.Open(token, aad)
	if err != nil {
		return Claim{}, ErrInvalid
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
