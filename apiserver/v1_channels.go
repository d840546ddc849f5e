package apiserver

import "github.com/gin-gonic/gin"

// NotifyConfig configures the notification channels API.
type NotifyConfig struct{}

func (c *NotifyConfig) setDefaults()      {}
func (c *NotifyConfig) validate() []error { return nil }

// notifyArea is the channels API's state.
type notifyArea struct{}

func (s *Server) initNotify() error { return nil }

// channelRoutes serves /api/v1/channels.
func (s *Server) channelRoutes(g *gin.RouterGroup) {}
