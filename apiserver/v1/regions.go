package v1

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/internal/presence"
)

// regionRoutes serves /api/v1/regions.
func (h *Handler) regionRoutes(g *gin.RouterGroup) {
	g.GET("/regions", append(h.guard(accounts.ScopeRead), h.regions)...)
}

// regionJSON is one region the service scans from. Regions are the
// operator's vantage points, the same for every tenant.
type regionJSON struct {
	presence.Region
	// Stale: none of its agents said it was alive within
	// --region-stale-after; its last results no longer count in
	// region_mismatch and scan_failing, and POST /check does not wait
	// for it.
	Stale bool `json:"stale"`
}

// regions is GET /regions: every region an agent was seen in, with when
// and whether it is stale. A region is picked up when its first agent
// starts; an operator forgets a gone one with `certfleet regions forget`.
func (h *Handler) regions(c *gin.Context) {
	rs, err := presence.All(c.Request.Context(), h.rdb)
	if err != nil {
		httpapi.Fail(c, err)
		return
	}
	now := h.cfg.Now()
	out := make([]regionJSON, len(rs))
	for i, r := range rs {
		out[i] = regionJSON{Region: r, Stale: r.Stale(now, h.cfg.RegionStaleAfter)}
	}
	c.JSON(http.StatusOK, gin.H{"data": out})
}
