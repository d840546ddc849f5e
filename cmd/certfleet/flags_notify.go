package main

import (
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver"
)

// notifyOptions are the notification flags.
type notifyOptions struct{}

// notify registers the notification flags.
func (f *flagSet) notify() *flagSet { return f }

// notifyConfig is the apiserver's part of the notification settings.
func (o *options) notifyConfig() apiserver.NotifyConfig { return apiserver.NotifyConfig{} }

// addNotifier adds the notifier to gr when role runs it.
func addNotifier(gr *group, role string, o *options, rdb redis.UniversalClient, logger *zap.Logger) error {
	return nil
}
