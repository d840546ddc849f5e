package apiserver

import "github.com/gin-gonic/gin"

// caRoutes serves /api/ca/certificate and /api/client-certs/....
func (s *Server) caRoutes(r *gin.Engine) {}
