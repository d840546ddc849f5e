package apiserver

import "github.com/gin-gonic/gin"

// checkRoutes serves /api/v1/domains/:id/ssl, /domains/:id/whois and /check.
func (s *Server) checkRoutes(g *gin.RouterGroup) {}
