package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/certfleet/certfleet/agent"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/events/stream"
	"github.com/certfleet/certfleet/internal/presence"
)

const regionsUsage = "usage: certfleet regions list [--region-stale-after D]\n" +
	"       certfleet regions forget --region NAME"

// runRegions is `certfleet regions list|forget`: the regions agents scan
// from (internal/presence). A region is picked up when its first agent
// starts; one whose agents are gone for good is forgotten here (with its
// consumer group on the job streams), or it stays listed as stale.
func runRegions(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "forget") {
		return actionUsage(stderr, "regions", regionsUsage, args)
	}
	action := args[0]
	fs := newFlagSet("regions " + action).redis()
	if action == "forget" {
		fs.StringVar(&fs.opts.Region, "region", "", "the region to forget (required)")
	} else {
		fs.DurationVar(&fs.opts.RegionStaleAfter, "region-stale-after", 10*time.Minute, "a region none of whose agents was seen for this long is listed as stale")
	}
	logger, err := fs.parse(args[1:], stderr)
	if err != nil {
		return err
	}
	defer func() { _ = logger.Sync() }()
	if action == "forget" && fs.opts.Region == "" {
		return usagef("--region names the region to forget")
	}
	rdb, err := openRedis(ctx, fs.opts, 0)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if action == "forget" {
		region := fs.opts.Region
		ok, err := presence.Forget(ctx, rdb, region)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("no region %q (certfleet regions list names them)", region)
		}
		// Its consumer group on every job stream: the jobs it never read
		// would stay in the streams (trimming waits for every group).
		shards, err := events.Shards(ctx, rdb)
		if err != nil {
			return err
		}
		groups := 0
		for i := range shards {
			n, err := rdb.XGroupDestroy(ctx, events.JobStream(i), agent.Group(region)).Result()
			if err != nil && !stream.HasRedisError(err, "no such key") {
				return fmt.Errorf("drop the group of %s on %s: %w", region, events.JobStream(i), err)
			}
			groups += int(n)
		}
		fmt.Fprintf(stdout, "forgot region %s and dropped its consumer group on %d job streams; an agent of it that is still alive adds both again\n", region, groups)
		return nil
	}
	rs, err := presence.All(ctx, rdb)
	if err != nil {
		return err
	}
	now := time.Now()
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "REGION\tLAST SEEN\tSTATE")
	for _, r := range rs {
		state := "active"
		if r.Stale(now, fs.opts.RegionStaleAfter) {
			state = "stale"
		}
		fmt.Fprintf(tw, "%s\t%s (%s ago)\t%s\n", r.Name, r.LastSeen.Format(time.RFC3339), now.Sub(r.LastSeen).Round(time.Second), state)
	}
	return tw.Flush()
}
