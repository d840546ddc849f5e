package apiserver

import "github.com/gin-gonic/gin"

// AuditConfig configures the audit log.
type AuditConfig struct{}

func (c *AuditConfig) setDefaults()      {}
func (c *AuditConfig) validate() []error { return nil }

// auditArea is the audit log's state.
type auditArea struct{}

func (s *Server) initAudit() error { return nil }

// auditRoutes serves /api/audit.
func (s *Server) auditRoutes(r *gin.Engine) {}
