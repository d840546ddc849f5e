package apiserver

import "github.com/gin-gonic/gin"

// AlertsConfig configures the alerts API.
type AlertsConfig struct{}

func (c *AlertsConfig) setDefaults()      {}
func (c *AlertsConfig) validate() []error { return nil }

// alertsArea is the alerts API's state.
type alertsArea struct{}

func (s *Server) initAlerts() error { return nil }

// alertRoutes serves /api/v1/alerts and /api/v1/alert-settings.
func (s *Server) alertRoutes(g *gin.RouterGroup) {}
