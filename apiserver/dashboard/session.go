package dashboard

// Sessions live in Redis, one hash per session:
//
//	dashboard:session:<sha256 hex of the session id>
//	    hash {key (the API key's hash, accounts.HashKey), csrf, created
//	    (ms), flash, flash_kind}, expiring SessionTTL after sign-in
//
// The cookie holds the session id; Redis holds only its hash, so a copy
// of Redis signs no one in. The API key itself is kept nowhere: every
// request looks its hash up again (accounts.AuthenticateHash), so a
// revoked or expired key ends its sessions at once. One key per session:
// safe on Redis Cluster.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
)

const (
	// SessionCookie holds the session id.
	SessionCookie = "certfleet_session"
	// signinCookie holds the sign-in form's CSRF token (double submit:
	// there is no session yet).
	signinCookie = "certfleet_signin"
	// CSRFField is the form field of the CSRF token.
	CSRFField = "csrf"

	sessionPrefix = "dashboard:session:"
)

// session is a signed-in session.
type session struct {
	key     string // hash of the Redis key
	keyHash string // of the API key
	csrf    string
}

type sessions struct {
	rdb redis.UniversalClient
	ttl time.Duration
	now func() time.Time
}

// randomToken returns 32 random bytes, base64url.
func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func sessionKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return sessionPrefix + hex.EncodeToString(sum[:])
}

// create starts a session for the key of keyHash and returns its id.
func (s *sessions) create(ctx context.Context, keyHash string) (string, error) {
	id, err := randomToken()
	if err != nil {
		return "", err
	}
	csrf, err := randomToken()
	if err != nil {
		return "", err
	}
	k := sessionKey(id)
	if _, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, k, "key", keyHash, "csrf", csrf, "created", strconv.FormatInt(s.now().UnixMilli(), 10))
		p.Expire(ctx, k, s.ttl)
		return nil
	}); err != nil {
		return "", fmt.Errorf("create session: %w", err)
	}
	return id, nil
}

// load returns the session of id; ok false when there is none (expired,
// signed out, never).
func (s *sessions) load(ctx context.Context, id string) (*session, bool, error) {
	if id == "" {
		return nil, false, nil
	}
	k := sessionKey(id)
	rec, err := s.rdb.HMGet(ctx, k, "key", "csrf").Result()
	if err != nil {
		return nil, false, fmt.Errorf("load session: %w", err)
	}
	keyHash, _ := rec[0].(string)
	csrf, _ := rec[1].(string)
	if keyHash == "" || csrf == "" {
		return nil, false, nil
	}
	return &session{key: k, keyHash: keyHash, csrf: csrf}, true, nil
}

// end deletes the session.
func (s *sessions) end(ctx context.Context, sess *session) error {
	if err := s.rdb.Del(ctx, sess.key).Err(); err != nil {
		return fmt.Errorf("end session: %w", err)
	}
	return nil
}

// Flash kinds.
const (
	FlashInfo  = "info"
	FlashError = "error"
)

// Flash is a message an action leaves for the next page.
type Flash struct {
	Kind, Msg string
}

// setFlash leaves msg for the session's next page; a session that ended
// meanwhile is not brought back.
func (s *sessions) setFlash(ctx context.Context, sess *session, kind, msg string) error {
	if err := setFlashScript.Run(ctx, s.rdb, []string{sess.key}, msg, kind).Err(); err != nil && err != redis.Nil {
		return fmt.Errorf("set flash: %w", err)
	}
	return nil
}

// setFlashScript writes the flash only into a session that still exists
// (HSET would make a session without key and expiry).
var setFlashScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'flash', ARGV[1], 'flash_kind', ARGV[2])
end
return 1`)

// popFlash takes the session's flash message, nil when none.
func (s *sessions) popFlash(ctx context.Context, sess *session) (*Flash, error) {
	var get *redis.SliceCmd
	if _, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		get = p.HMGet(ctx, sess.key, "flash", "flash_kind")
		p.HDel(ctx, sess.key, "flash", "flash_kind")
		return nil
	}); err != nil {
		return nil, fmt.Errorf("pop flash: %w", err)
	}
	msg, _ := get.Val()[0].(string)
	kind, _ := get.Val()[1].(string)
	if msg == "" {
		return nil, nil
	}
	return &Flash{Kind: kind, Msg: msg}, nil
}

// tokenEqual compares tokens in constant time; an empty one never
// matches.
func tokenEqual(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// setCookie sets an HttpOnly, SameSite=Strict cookie, Secure over TLS or
// when the configuration says a proxy terminates TLS; maxAge < 0 deletes
// it.
func (d *Dashboard) setCookie(c *gin.Context, name, value, path string, maxAge int) {
	http.SetCookie(c.Writer, &http.Cookie{Name: name, Value: value, Path: path, MaxAge: maxAge, HttpOnly: true,
		Secure: c.Request.TLS != nil || d.cfg.SecureCookies, SameSite: http.SameSiteStrictMode})
}
