package v1

import (
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/internal/managedcert"
)

// dnsAccountRoutes serves the DNS provider accounts that solve the DNS-01
// challenges of managed certificates (/api/certificates): credentials go
// in, sealed, and never come out.
func (h *Handler) dnsAccountRoutes(g *gin.RouterGroup) {
	read, write := h.guard(accounts.ScopeRead), h.guard(accounts.ScopeWrite)
	g.GET("/dns-accounts", append(read, h.listDNSAccounts)...)
	g.POST("/dns-accounts", append(write, h.putDNSAccount)...)
	g.GET("/dns-accounts/:provider/:account_id", append(read, h.getDNSAccount)...)
	g.DELETE("/dns-accounts/:provider/:account_id", append(write, h.deleteDNSAccount)...)
}

// dnsAccountRequest is POST /dns-accounts' body: credentials by lego's
// names for the provider (docs/dns-providers.md).
type dnsAccountRequest struct {
	Provider    string            `json:"provider"`
	AccountID   string            `json:"account_id"`
	Credentials map[string]string `json:"credentials"`
}

// dnsAccount is an account as the API shows it: the names of its
// credentials, never their values.
type dnsAccount struct {
	Provider        string    `json:"provider"`
	AccountID       string    `json:"account_id"`
	CredentialNames []string  `json:"credential_names"`
	CreatedAt       time.Time `json:"created_at"`
	UpdatedAt       time.Time `json:"updated_at"`
}

func dnsAccountJSON(a managedcert.DNSAccount) dnsAccount {
	return dnsAccount{Provider: a.Provider, AccountID: a.AccountID, CredentialNames: a.CredentialNames,
		CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt}
}

// failDNSAccount answers the store's refusals as what they mean.
func failDNSAccount(c *gin.Context, err error) {
	var inv *managedcert.InvalidError
	switch {
	case errors.As(err, &inv):
		err = httpapi.BadRequest(inv.Error())
	case errors.Is(err, managedcert.ErrNotFound):
		err = httpapi.Errorf(http.StatusNotFound, "DNS account not found")
	case errors.Is(err, managedcert.ErrInUse):
		err = httpapi.Errorf(http.StatusConflict, err.Error())
	case errors.Is(err, managedcert.ErrNoPassphrase):
		err = httpapi.Errorf(http.StatusServiceUnavailable, "DNS accounts are disabled: this server has no secrets passphrase (--secrets-passphrase)")
	}
	httpapi.Fail(c, err)
}

// putDNSAccount creates or replaces an account: 201 when new, 200 when it
// replaced one.
func (h *Handler) putDNSAccount(c *gin.Context) {
	var req dnsAccountRequest
	if err := httpapi.BindJSON(c, &req); err != nil {
		httpapi.Fail(c, err)
		return
	}
	if req.Provider == "" || req.AccountID == "" || len(req.Credentials) == 0 {
		httpapi.Fail(c, httpapi.BadRequest(`fields "provider", "account_id" and "credentials" are required`))
		return
	}
	a, err := h.cfg.ManagedCerts.PutDNSAccount(c.Request.Context(), httpapi.Principal(c).TenantID, req.Provider, req.AccountID, req.Credentials)
	if err != nil {
		failDNSAccount(c, err)
		return
	}
	status := http.StatusCreated
	if !a.CreatedAt.Equal(a.UpdatedAt) {
		status = http.StatusOK
	}
	c.JSON(status, dnsAccountJSON(a))
}

func (h *Handler) listDNSAccounts(c *gin.Context) {
	list, err := h.cfg.ManagedCerts.ListDNSAccounts(c.Request.Context(), httpapi.Principal(c).TenantID)
	if err != nil {
		failDNSAccount(c, err)
		return
	}
	out := make([]dnsAccount, len(list))
	for i, a := range list {
		out[i] = dnsAccountJSON(a)
	}
	c.JSON(http.StatusOK, gin.H{"dns_accounts": out, "providers": managedcert.ProviderNames()})
}

func (h *Handler) getDNSAccount(c *gin.Context) {
	a, err := h.cfg.ManagedCerts.GetDNSAccount(c.Request.Context(), httpapi.Principal(c).TenantID, c.Param("provider"), c.Param("account_id"))
	if err != nil {
		failDNSAccount(c, err)
		return
	}
	c.JSON(http.StatusOK, dnsAccountJSON(a))
}

func (h *Handler) deleteDNSAccount(c *gin.Context) {
	if err := h.cfg.ManagedCerts.DeleteDNSAccount(c.Request.Context(), httpapi.Principal(c).TenantID, c.Param("provider"), c.Param("account_id")); err != nil {
		failDNSAccount(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}
