// Package pipelinetest runs the scanning pipeline in-process for tests:
// the lab's TLS targets (agent/lab), a coordinator, one agent per region
// and projectors, all on one Redis, stopped when the test ends. Only
// _test.go files import it.
package pipelinetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/agent"
	"github.com/certfleet/certfleet/agent/lab"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/coordinator"
	"github.com/certfleet/certfleet/internal/presence"
	"github.com/certfleet/certfleet/internal/testenv"
)

// Config is the pipeline to run.
type Config struct {
	// Shards of the coordinator and the agents.
	Shards int
	// Interval is the coordinator's scan interval; 0 its default.
	Interval time.Duration
	// Regions get one agent each, and are marked present.
	Regions []string
	// Evaluators get one projector each; a nil one is a projector
	// without alerts.
	Evaluators []projector.Evaluator
}

// Start starts the lab and the pipeline of cfg on rdb and returns the lab.
// Everything stops when the test ends; a component that stops before
// fails the test.
func Start(t *testing.T, rdb *redis.Client, cfg Config) *lab.Lab {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logger := testenv.Logger(t)
	fleet, err := lab.Start(ctx, lab.Config{}, logger)
	if err != nil {
		cancel()
		t.Fatalf("start lab: %v", err)
	}
	co, err := coordinator.New(coordinator.Config{Name: "co-1", Shards: cfg.Shards, Interval: cfg.Interval, Tick: 100 * time.Millisecond}, rdb, logger)
	if err != nil {
		t.Fatal(err)
	}
	runs := []func(context.Context) error{co.Run}
	for _, region := range cfg.Regions {
		ag, err := agent.New(agent.Config{Region: region, Name: region + "-1", Shards: cfg.Shards, Block: 200 * time.Millisecond,
			Scanner: agent.ScannerConfig{Resolver: fleet.ResolverAddr(), ExtraRootsPEM: fleet.RootsPEM(), Allow: fleet.AllowPrefixes()}}, rdb, logger)
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, ag.Run)
	}
	for i, eval := range cfg.Evaluators {
		p, err := projector.New(projector.Config{Consumer: fmt.Sprint("proj-", i+1), Block: 100 * time.Millisecond, Evaluator: eval}, rdb, logger)
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, p.Run)
	}
	var wg sync.WaitGroup
	for _, run := range runs {
		wg.Go(func() {
			if err := run(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("component stopped: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		fleet.Close()
	})
	for _, region := range cfg.Regions {
		if err := presence.Seen(ctx, rdb, region, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	return fleet
}
