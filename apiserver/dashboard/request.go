package dashboard

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/gin-gonic/gin"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/httpapi"
)

// Request is a signed-in request to a page or an action: the gin
// context, who it acts as, and the session.
type Request struct {
	*gin.Context
	// Principal is the key signed in: its tenant and scopes.
	Principal accounts.Principal

	d       *Dashboard
	session *session
}

const requestKey = "certfleet.dashboard.request"

// request returns c's Request, which signedIn set.
func (d *Dashboard) request(c *gin.Context) *Request { return c.MustGet(requestKey).(*Request) }

// Ctx is the request's context.
func (r *Request) Ctx() context.Context { return r.Request.Context() }

// Tenant is the tenant the key belongs to: every read and write of a page
// is scoped to it.
func (r *Request) Tenant() string { return r.Principal.TenantID }

// CanWrite tells whether the key holds write.
func (r *Request) CanWrite() bool { return r.Principal.Can(accounts.ScopeWrite) }

// Flash leaves msg for the next page the session shows (kind FlashInfo
// or FlashError). A failure to store it is logged: it only loses the
// message.
func (r *Request) Flash(kind, msg string) {
	if err := r.d.sessions.setFlash(r.Ctx(), r.session, kind, msg); err != nil {
		r.d.logger.Warn("store flash failed", zap.Error(err))
	}
}

// signedIn admits a request of a live session whose key holds scope,
// records it as the request's principal, and for a POST (post) checks
// the CSRF token first. No session: 401, which a GET answers with the
// sign-in page.
func (d *Dashboard) signedIn(scope string, post bool) gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx := c.Request.Context()
		id, _ := c.Cookie(SessionCookie)
		sess, ok, err := d.sessions.load(ctx, id)
		if err != nil {
			httpapi.Fail(c, err)
			return
		}
		if !ok {
			httpapi.Fail(c, httpapi.Errorf(http.StatusUnauthorized, "Your session has ended: sign in again"))
			return
		}
		if post && !tokenEqual(c.PostForm(CSRFField), sess.csrf) {
			httpapi.Fail(c, httpapi.Errorf(http.StatusForbidden, "The form's security token is missing or stale: reload the page and try again"))
			return
		}
		p, err := d.deps.Auth.AuthenticateHash(ctx, sess.keyHash)
		if e := httpapi.AsError(err); e != nil && e.Status == http.StatusUnauthorized {
			// The key was revoked or expired: so is the session.
			if err := d.sessions.end(ctx, sess); err != nil {
				d.logger.Warn("end session of a dead key failed", zap.Error(err))
			}
			d.setCookie(c, SessionCookie, "", "/", -1)
		}
		if err != nil {
			httpapi.Fail(c, err)
			return
		}
		c.Set(requestKey, &Request{Context: c, Principal: p, d: d, session: sess})
		d.deps.Auth.Admit(c, p, scope)
	}
}

// signinForm is GET /signin.
func (d *Dashboard) signinForm(c *gin.Context) {
	d.renderSignin(c, http.StatusOK, "")
}

// renderSignin shows the sign-in form with a fresh CSRF token (double
// submit: the same token in a cookie and the form).
func (d *Dashboard) renderSignin(c *gin.Context, status int, msg string) {
	tok, err := randomToken()
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	d.setCookie(c, signinCookie, tok, "/signin", 3600)
	v := View{Title: "Sign in", CSRF: tok, Next: safeNext(c.Query("next")), Status: status, Message: msg}
	if v.Next == "/" {
		v.Next = safeNext(c.PostForm("next"))
	}
	d.render(c, status, signinTemplate, v)
}

// signin is POST /signin: an API key with read starts a session.
func (d *Dashboard) signin(c *gin.Context) {
	ctx := c.Request.Context()
	cookie, _ := c.Cookie(signinCookie)
	if !tokenEqual(c.PostForm(CSRFField), cookie) {
		d.renderSignin(c, http.StatusForbidden, "The form's security token is missing or stale: try again")
		return
	}
	// Wrong keys count against the client address's failed
	// authentications, as on the APIs: past the limit, 429 before the
	// key is looked at.
	if !d.deps.Auth.FailuresLeft(c) {
		return
	}
	key := strings.TrimSpace(c.PostForm("api_key"))
	p, err := d.deps.Auth.Authenticate(ctx, key)
	if e := httpapi.AsError(err); e != nil && e.Status == http.StatusUnauthorized {
		d.deps.Auth.Failed(c)
		d.renderSignin(c, http.StatusUnauthorized, httpapi.MsgUnauthorized)
		return
	}
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	if !p.Can(accounts.ScopeRead) {
		d.renderSignin(c, http.StatusForbidden, "This API key lacks the read permission")
		return
	}
	id, err := d.sessions.create(ctx, accounts.HashKey(key))
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	d.setCookie(c, signinCookie, "", "/signin", -1)
	d.setCookie(c, SessionCookie, id, "/", int(d.cfg.SessionTTL.Seconds()))
	c.Redirect(http.StatusSeeOther, safeNext(c.PostForm("next")))
}

// signout is POST /signout.
func (d *Dashboard) signout(c *gin.Context) {
	r := d.request(c)
	if err := d.sessions.end(r.Ctx(), r.session); err != nil {
		httpapi.Fail(c, err)
		return
	}
	d.setCookie(c, SessionCookie, "", "/", -1)
	c.Redirect(http.StatusSeeOther, "/signin")
}

// safeNext is next when it is a path of this site, else "/": sign-in
// never redirects elsewhere.
func safeNext(next string) string {
	u, err := url.Parse(next)
	if next == "" || err != nil || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(next, "/") ||
		strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/"
	}
	return next
}

func queryEscape(s string) string { return url.QueryEscape(s) }
