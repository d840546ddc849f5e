package main

import "github.com/certfleet/certfleet/apiserver"

// caOptions are the private CA's flags.
type caOptions struct{}

// ca registers the private CA's flags.
func (f *flagSet) ca() *flagSet { return f }

// caConfig is the apiserver's CA settings.
func (o *options) caConfig() apiserver.CAConfig { return apiserver.CAConfig{} }
