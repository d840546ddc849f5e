package main

import (
	"fmt"
	"time"

	"github.com/certfleet/certfleet/apiserver/projector"
)

// viewsOptions are the flags of the view snapshots and of rebuilding the
// views (apiserver/projector, viewsnapshot.go).
type viewsOptions struct {
	ViewSnapshotInterval time.Duration
	FullReplay           bool
	ReplayOverlap        time.Duration
}

// viewSnapshots adds the flag of the API server's view snapshots.
func (f *flagSet) viewSnapshots() *flagSet {
	defer f.group("Views")()
	f.DurationVar(&f.opts.ViewSnapshotInterval, "view-snapshot-interval", 6*time.Hour,
		"copy the projector's views into ClickHouse this often (one replica at a time, under a lease), so that views rebuild replays only the events since; 0 takes none")
	return f
}

// rebuild adds the flags of views rebuild.
func (f *flagSet) rebuild() *flagSet {
	defer f.group("Rebuild")()
	f.BoolVar(&f.opts.FullReplay, "full", false, "replay every stored event instead of restoring the latest view snapshot and replaying the events since")
	f.DurationVar(&f.opts.ReplayOverlap, "replay-overlap", projector.DefaultReplayOverlap,
		"start the replay after a snapshot this much before its watermark, for clocks and late publishers")
	return f
}

func (o *viewsOptions) validate() error {
	if o.ViewSnapshotInterval < 0 {
		return fmt.Errorf("--view-snapshot-interval must not be negative, got %s", o.ViewSnapshotInterval)
	}
	if o.ReplayOverlap < 0 {
		return fmt.Errorf("--replay-overlap must not be negative, got %s", o.ReplayOverlap)
	}
	return nil
}
