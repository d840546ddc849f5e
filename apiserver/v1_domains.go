package apiserver

import "github.com/gin-gonic/gin"

// domainRoutes serves /api/v1/domains.
func (s *Server) domainRoutes(g *gin.RouterGroup) {}
