// Package dashboard serves certfleet's web dashboard at / of the API
// server: pages rendered on the server with html/template over the same
// Go code the v1 API's handlers run (no HTTP calls to itself), signed in
// with an API key, a session kept in Redis, and CSS and a little
// JavaScript embedded in the binary (no CDN, fonts or outside scripts;
// every page works without JavaScript, which only adds confirmations and
// refreshes).
//
// # Adding a page
//
// A page is one Go file and one template:
//
//   - page_<name>.go holds a method of *Dashboard returning a Page: its
//     path, title, navigation label, template, the Get that loads what
//     the template shows, and its Actions (the page's POSTs);
//   - templates/<name>.html defines "content" (and may define "head"),
//     rendered inside templates/layout.html; it reads the page's data as
//     .Data and the request's facts from View (.CanWrite, .CSRF, ...);
//   - one line in pages() (pages.go) mounts it.
//
// Every page needs a key with read and counts against the key's general
// rate limit, as the API's routes do; every action needs write unless it
// says otherwise, counts against the general limit and the classes it
// names, and needs a valid CSRF token (the "csrf" template writes the
// hidden field; every POST form must include it). An action answers with
// a redirect (POST, redirect, GET), leaving a flash message for the next
// page. Errors are values: Get and Do return the same errors the v1 API
// does and the dashboard answers them as v1 would (v1.ErrorStyle), on an
// HTML page.
package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/alerts"
	"github.com/certfleet/certfleet/apiserver/audit"
	"github.com/certfleet/certfleet/apiserver/clientca"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	v1 "github.com/certfleet/certfleet/apiserver/v1"
	"github.com/certfleet/certfleet/internal/channels"
	"github.com/certfleet/certfleet/internal/managedcert"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets
var assetFS embed.FS

// Config configures the dashboard.
type Config struct {
	// SessionTTL is how long a session lasts after sign-in; it does not
	// slide. Default 12h.
	SessionTTL time.Duration
	// SecureCookies marks the cookies Secure even on plain HTTP: set it
	// when a proxy terminates TLS in front of the server. Over TLS they
	// are Secure anyway.
	SecureCookies bool
	// PlannerTTL is how long the overview reuses a tenant's expiry
	// planner (a ClickHouse query of about 100ms for 10,000 domains, whose
	// weekly counts change with hourly scans); negative: never. Default 1m.
	PlannerTTL time.Duration
	// Now is the clock pages compute days and ages against. Default
	// time.Now.
	Now func() time.Time
}

// SetDefaults fills the fields left zero.
func (c *Config) SetDefaults() {
	if c.SessionTTL == 0 {
		c.SessionTTL = 12 * time.Hour
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.PlannerTTL == 0 {
		c.PlannerTTL = time.Minute
	}
}

// Validate reports every problem of the configuration.
func (c *Config) Validate() error {
	if c.SessionTTL < time.Minute {
		return fmt.Errorf("dashboard session ttl must be at least 1m, got %s", c.SessionTTL)
	}
	return nil
}

// Deps are what the pages read and change: the stores and the v1 API the
// server built.
type Deps struct {
	Redis    redis.UniversalClient
	Accounts *accounts.Store
	Auth     *httpapi.Auth
	V1       *v1.Handler
	Alerts   *alerts.Engine
	// Channels, ClientCA, Managed and Audit are the notification
	// channels, the client CA, the managed certificates and the audit
	// log (their pages).
	Channels *channels.Store
	ClientCA *clientca.Store
	Managed  *managedcert.Store
	Audit    *audit.Log
}

// Dashboard serves the web dashboard.
type Dashboard struct {
	cfg      Config
	deps     Deps
	logger   *zap.Logger
	pages    []Page
	tmpl     map[string]*template.Template // by template file name
	assetVer string                        // of every asset, for cache busting
	sessions *sessions
	planners *ttlCache[plannerEntry]
}

// New returns the dashboard over deps.
func New(cfg Config, deps Deps, logger *zap.Logger) (*Dashboard, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Redis == nil || deps.Accounts == nil || deps.Auth == nil || deps.V1 == nil || deps.Alerts == nil ||
		deps.Channels == nil || deps.ClientCA == nil || deps.Managed == nil || deps.Audit == nil {
		return nil, errors.New("dashboard: every dependency is required")
	}
	d := &Dashboard{cfg: cfg, deps: deps, logger: logger.Named("dashboard"), tmpl: map[string]*template.Template{},
		sessions: &sessions{rdb: deps.Redis, ttl: cfg.SessionTTL, now: cfg.Now},
		planners: newTTLCache[plannerEntry](cfg.PlannerTTL, maxCachedTenants)}
	ver, err := assetVersion()
	if err != nil {
		return nil, err
	}
	d.assetVer = ver
	d.pages = d.pageList()
	names := []string{signinTemplate, errorTemplate}
	for _, p := range d.pages {
		names = append(names, p.Template)
	}
	for _, name := range names {
		if _, ok := d.tmpl[name]; ok {
			continue
		}
		t, err := template.New(name).Funcs(d.funcs()).ParseFS(templateFS, "templates/layout.html", "templates/"+name)
		if err != nil {
			return nil, fmt.Errorf("dashboard template %s: %w", name, err)
		}
		d.tmpl[name] = t
	}
	return d, nil
}

// assetVersion hashes every embedded asset, so that their URLs change
// with them and browsers may cache them for long.
func assetVersion() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(assetFS, "assets", func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := assetFS.ReadFile(path)
		h.Write([]byte(path))
		h.Write(b)
		return err
	})
	return hex.EncodeToString(h.Sum(nil))[:12], err
}

// Page is one page of the dashboard.
type Page struct {
	// Path is the page's route, e.g. "/domains" or "/domains/:id".
	Path string
	// Title is the page's <title> and heading.
	Title string
	// Nav is the label in the navigation; empty keeps the page out of it.
	Nav string
	// Template is the page's file in templates/, defining "content".
	Template string
	// Get loads what the template shows as .Data; when that has a
	// PageTitle() string method, it titles the page.
	Get func(r *Request) (any, error)
	// Actions are the page's POSTs.
	Actions []Action
}

// Action is a POST of a page: a form's target.
type Action struct {
	// Path is the action's route, e.g. "/domains/:id/delete".
	Path string
	// Scope the key needs. Default accounts.ScopeWrite.
	Scope string
	// Do acts and returns where to go next (303); on an error the
	// client caused, the error shows as a flash message there ("/" when
	// to is empty). A Do that wrote the answer itself (a download) is
	// not redirected.
	Do func(r *Request) (to string, err error)
	// Before are handlers run before the session check, e.g. an audit
	// record of the action (Dashboard.audited).
	Before []gin.HandlerFunc
	// Classes are the rate limit classes the action counts against
	// beside the general one (v1.Handler.Limits), as its API route does:
	// v1.ClassCheck for a check.
	Classes []string
}

// NavItem is a link of the navigation.
type NavItem struct {
	Label, Path string
	Current     bool
}

// View is what every template gets.
type View struct {
	Title string
	Nav   []NavItem
	// Signed is false on the sign-in page and on errors before sign-in.
	Signed bool
	// CanWrite tells whether the key may change things: show edit
	// buttons and forms only then.
	CanWrite bool
	// CSRF is the session's token; the "csrf" template writes it.
	CSRF string
	// KeyID names the key signed in.
	KeyID string
	// Flash is the message the previous action left, if any.
	Flash *Flash
	// Data is what the page's Get returned.
	Data any
	// Status is the HTTP status of an error page.
	Status int
	// Message is an error page's message.
	Message string
	// Next is where the sign-in form goes after.
	Next string

	assetVer string
}

// Routes mounts the dashboard on r: /signin, /signout, /assets/... and
// every page and action. It leaves /api/..., /metrics, /healthz and the
// other routes to their owners.
func (d *Dashboard) Routes(r *gin.Engine) {
	g := r.Group("", d.secureHeaders, d.renderErrors, readForm)
	// One route per embedded file, not a wildcard: a missing asset falls
	// through to the engine's NoRoute and gets the 404 every unknown path
	// gets, not a bare status.
	_ = fs.WalkDir(assetFS, "assets", func(path string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			g.GET("/"+path, d.asset(strings.TrimPrefix(path, "assets/")))
		}
		return err
	})
	g.GET("/signin", d.signinForm)
	g.POST("/signin", d.signin)
	g.POST("/signout", d.signedIn(accounts.ScopeRead, true), d.signout)
	for _, p := range d.pages {
		g.GET(p.Path, append(append([]gin.HandlerFunc{d.signedIn(accounts.ScopeRead, false)}, d.deps.V1.Limits()...), d.show(p))...)
		for _, a := range p.Actions {
			scope := a.Scope
			if scope == "" {
				scope = accounts.ScopeWrite
			}
			hs := append(slices.Clip(a.Before), d.signedIn(scope, true))
			hs = append(hs, d.deps.V1.Limits(a.Classes...)...)
			g.POST(a.Path, append(hs, d.act(a))...)
		}
	}
}

// readForm parses a POST's form before anything reads a field of it:
// gin's PostForm drops a parse error, so a form over the server's body
// limit read as an empty form (a stale-token 403 after the whole upload)
// rather than the 413 the APIs answer (httpapi.ReadError).
func readForm(c *gin.Context) {
	if c.Request.Method != http.MethodPost {
		return
	}
	// ParseForm first: ParseMultipartForm returns ErrNotMultipart for a
	// URL-encoded form and drops ParseForm's error. The memory bound is
	// gin's default; the body limit is far below it.
	err := c.Request.ParseForm()
	if err == nil {
		if err = c.Request.ParseMultipartForm(32 << 20); errors.Is(err, http.ErrNotMultipart) {
			err = nil
		}
	}
	if err != nil {
		httpapi.Fail(c, httpapi.ReadError(err))
	}
}

// secureHeaders keeps pages from being framed, sniffed, cached or made
// to load anything from elsewhere.
func (d *Dashboard) secureHeaders(c *gin.Context) {
	h := c.Writer.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	if !strings.HasPrefix(c.Request.URL.Path, "/assets/") {
		h.Set("Cache-Control", "no-store")
	}
	c.Next()
}

// asset serves the embedded file name; its URL carries the assets'
// version, so it may be cached for long.
func (d *Dashboard) asset(name string) gin.HandlerFunc {
	b, _ := assetFS.ReadFile("assets/" + name) // listed by Routes' walk
	ct := "application/octet-stream"
	switch {
	case strings.HasSuffix(name, ".css"):
		ct = "text/css; charset=utf-8"
	case strings.HasSuffix(name, ".js"):
		ct = "text/javascript; charset=utf-8"
	case strings.HasSuffix(name, ".svg"):
		ct = "image/svg+xml"
	}
	return func(c *gin.Context) {
		c.Header("Cache-Control", "public, max-age=31536000, immutable")
		c.Data(http.StatusOK, ct, b)
	}
}

// show serves a page's GET.
func (d *Dashboard) show(p Page) gin.HandlerFunc {
	return func(c *gin.Context) {
		r := d.request(c)
		var data any
		if p.Get != nil {
			var err error
			if data, err = p.Get(r); err != nil {
				httpapi.Fail(c, err)
				return
			}
		}
		title := p.Title
		if t, ok := data.(interface{ PageTitle() string }); ok {
			title = t.PageTitle() // a page of one thing names it
		}
		v := d.view(r, title, p.Path)
		v.Data = data
		if f, err := d.sessions.popFlash(c.Request.Context(), r.session); err != nil {
			d.logger.Warn("read flash failed", zap.Error(err))
		} else {
			v.Flash = f
		}
		d.render(c, http.StatusOK, p.Template, v)
	}
}

// act serves an action's POST: the CSRF token was checked by signedIn.
func (d *Dashboard) act(a Action) gin.HandlerFunc {
	return func(c *gin.Context) {
		r := d.request(c)
		to, err := a.Do(r)
		if err == nil && c.Writer.Written() {
			return // a download
		}
		if err != nil {
			e := v1.ErrorStyle().Explain(c, err)
			if e == nil || e.Status >= 500 || e.Status == http.StatusForbidden {
				httpapi.Fail(c, err)
				return
			}
			r.Flash(FlashError, e.Msg)
		}
		if to == "" {
			to = "/"
		}
		c.Redirect(http.StatusSeeOther, to)
	}
}

// view is the View of a page of r's session.
func (d *Dashboard) view(r *Request, title, current string) View {
	v := View{Title: title, Signed: true, CanWrite: r.CanWrite(), CSRF: r.session.csrf, KeyID: r.Principal.KeyID, assetVer: d.assetVer}
	for _, p := range d.pages {
		if p.Nav != "" {
			v.Nav = append(v.Nav, NavItem{Label: p.Nav, Path: p.Path, Current: p.Path == current})
		}
	}
	return v
}

// render writes the template name with v; a template error is a 500
// before anything was written.
func (d *Dashboard) render(c *gin.Context, status int, name string, v View) {
	if v.assetVer == "" {
		v.assetVer = d.assetVer
	}
	var buf bytes.Buffer
	if err := d.tmpl[name].ExecuteTemplate(&buf, "layout", v); err != nil {
		d.logger.Error("render failed", zap.String("template", name), zap.Error(err))
		c.Data(http.StatusInternalServerError, "text/plain; charset=utf-8", []byte("internal error"))
		return
	}
	c.Data(status, "text/html; charset=utf-8", buf.Bytes())
}

const (
	signinTemplate = "signin.html"
	errorTemplate  = "error.html"
)

// renderErrors answers the errors of a page or action on an HTML page,
// with the status and message the v1 API gives the same error; an
// expired session on a GET goes to the sign-in page instead.
func (d *Dashboard) renderErrors(c *gin.Context) {
	c.Next()
	last := c.Errors.Last()
	if last == nil || c.Writer.Written() {
		return
	}
	e := v1.ErrorStyle().Explain(c, last.Err)
	if e == nil {
		d.logger.Error("request failed", zap.String("route", c.FullPath()), zap.Error(last.Err))
		e = &httpapi.Error{Status: http.StatusInternalServerError, Msg: "internal error"}
	}
	if e.Status == http.StatusUnauthorized && c.Request.Method == http.MethodGet {
		c.Redirect(http.StatusSeeOther, "/signin?next="+queryEscape(c.Request.URL.RequestURI()))
		return
	}
	if e.RetryAfter > 0 {
		c.Header("Retry-After", fmt.Sprint(e.RetryAfter))
	}
	v := View{Title: http.StatusText(e.Status), Status: e.Status, Message: e.Msg}
	if r, ok := c.Value(requestKey).(*Request); ok {
		v = d.view(r, v.Title, "")
		v.Status, v.Message = e.Status, e.Msg
	}
	d.render(c, e.Status, errorTemplate, v)
}
