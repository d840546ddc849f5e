package apiserver

import (
	_ "embed"
	"net/http"

	"github.com/gin-gonic/gin"
)

// openAPIDoc is the OpenAPI 3 document of every endpoint the server
// serves; openapi_test.go checks it against the routes.
//
//go:embed openapi.json
var openAPIDoc []byte

// openAPI is GET /api/openapi.json.
func (s *Server) openAPI(c *gin.Context) {
	c.Data(http.StatusOK, "application/json; charset=utf-8", openAPIDoc)
}
