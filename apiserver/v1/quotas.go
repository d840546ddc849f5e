package v1

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/internal/quota"
)

// quotaRoutes serves /api/v1/quotas.
func (h *Handler) quotaRoutes(g *gin.RouterGroup) {
	g.GET("/quotas", append(h.guard(accounts.ScopeRead), h.quotas)...)
}

// quotaJSON is one resource's limit (null: unlimited) and use.
type quotaJSON struct {
	Limit *int64 `json:"limit"`
	Used  int64  `json:"used"`
}

// quotas is GET /quotas: the account's limits (its overrides over the
// operator's defaults) and what it uses of each. requests_in_flight
// counts this server's, this request included.
func (h *Handler) quotas(c *gin.Context) {
	ctx := c.Request.Context()
	tenant := httpapi.Principal(c).TenantID
	limits, err := quota.Effective(ctx, h.rdb, tenant, h.cfg.Quotas)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	use, err := h.accounts.Usage(ctx, tenant)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	chans, err := h.channels.List(ctx, tenant)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	certs, err := h.cfg.ManagedCerts.Count(ctx, tenant)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	orders, err := h.cfg.ManagedCerts.OrdersToday(ctx, tenant)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	clientCerts, err := h.cfg.ClientCA.ActiveCount(ctx, tenant)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	used := map[quota.Resource]int64{quota.Domains: use.Domains, quota.APIKeys: use.APIKeys, quota.Channels: int64(len(chans)),
		quota.InFlight: h.auth.InFlight(tenant), quota.ManagedCerts: certs, quota.CertOrders: orders,
		quota.ClientCerts: clientCerts, quota.HeldAPIKeys: use.HeldAPIKeys, quota.HeldDomains: use.HeldDomains}
	out := make(map[string]quotaJSON, len(quota.Resources))
	for _, r := range quota.Resources {
		q := quotaJSON{Used: used[r]}
		if l := limits[r]; l > 0 {
			q.Limit = &l
		}
		out[string(r)] = q
	}
	c.JSON(http.StatusOK, out)
}
