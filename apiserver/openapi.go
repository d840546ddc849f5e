package apiserver

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/openapi"
)

// openAPI is GET /api/openapi.json.
func (s *Server) openAPI(c *gin.Context) {
	c.Data(http.StatusOK, "application/json; charset=utf-8", openapi.Document)
}
