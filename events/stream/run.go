package stream

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/certfleet/certfleet/internal/backoff"
)

// RunEach hands every entry to h, up to Concurrency at once, until ctx is
// done; each entry is acknowledged when h returned nil and dead-lettered
// when h returned a Permanent error. Once ctx is done it stops reading and
// waits up to ShutdownTimeout for the handlers in flight, then cancels
// their context; an entry whose handler was cut off stays pending. It
// returns an error only when the consumer is already running.
func (c *Consumer) RunEach(ctx context.Context, h Handler) error {
	if err := c.start(); err != nil {
		return err
	}
	defer c.end(ctx)
	stop := c.background(ctx)
	defer stop()
	c.createGroups(ctx)

	// Handlers outlive ctx by up to ShutdownTimeout, so they get their own.
	hctx, cancelHandlers := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHandlers()
	slots := make(chan struct{}, c.cfg.Concurrency)
	var wg sync.WaitGroup
	failures := 0
	for ctx.Err() == nil {
		// Read only when a slot is free, and no more than the free slots
		// spread over the streams, so entries do not wait here long enough
		// to be claimed by another consumer.
		select {
		case slots <- struct{}{}:
			<-slots
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		free := cap(slots) - len(slots)
		batch, pending, err := c.round(ctx, max(1, free/len(c.cfg.Streams)))
		if err != nil {
			failures++
			if !c.readFailed(ctx, failures, err) {
				break
			}
			continue
		}
		failures = 0
		if len(batch) == 0 && !pending {
			backoff.Sleep(ctx, c.cfg.PollInterval)
			continue
		}
		for _, e := range batch {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				// Read but not started: pending with this consumer, read
				// again by its next start or claimed by another.
			}
			if ctx.Err() != nil {
				break
			}
			wg.Go(func() {
				defer func() { <-slots }()
				c.each(hctx, h, e)
			})
		}
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(c.cfg.ShutdownTimeout):
		c.logger.Warn("handlers still running at shutdown, abandoning them", zap.Int("entries", len(slots)))
		cancelHandlers()
		<-done
	}
	return nil
}

func (c *Consumer) each(ctx context.Context, h Handler, e Entry) {
	err := c.handle(ctx, []Entry{e}, []zap.Field{zap.String("stream", e.Stream), zap.String("entry_id", e.ID), zap.String("event", e.Event.Name)},
		func() error { return h(ctx, e) })
	switch {
	case err == nil:
		c.ack(ctx, []Entry{e})
	case IsPermanent(err):
		c.deadLetter(ctx, e.Stream, e.ID, e.values, e.Deliveries, ReasonRejected, err)
	}
	// Otherwise ctx ended: the entry stays pending.
}

// RunBatches hands the entries to h in batches of up to Count until ctx is
// done, acknowledging a batch when h returned nil. While h handles a batch
// the next one is read, so Redis and the store work side by side; the
// read-ahead batch is pending with this consumer and comes back with the
// pending walk of the next start if the process stops first. A Permanent
// error from h makes the consumer hand the batch's entries over one by one
// and dead-letter those rejected alone. It returns an error only when the
// consumer is already running.
func (c *Consumer) RunBatches(ctx context.Context, h BatchHandler) error {
	if err := c.start(); err != nil {
		return err
	}
	defer c.end(ctx)
	stop := c.background(ctx)
	defer stop()
	c.createGroups(ctx)

	rctx, cancel := context.WithCancel(ctx)
	batches := make(chan []Entry)
	var wg sync.WaitGroup
	wg.Go(func() { c.readBatches(rctx, batches) })
	defer func() {
		cancel()
		wg.Wait()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case batch := <-batches:
			c.batch(ctx, h, batch)
		}
	}
}

func (c *Consumer) readBatches(ctx context.Context, out chan<- []Entry) {
	failures := 0
	for ctx.Err() == nil {
		batch, err := c.readBatch(ctx)
		if err != nil {
			failures++
			if !c.readFailed(ctx, failures, err) {
				return
			}
			continue
		}
		failures = 0
		if len(batch) == 0 {
			continue
		}
		select {
		case out <- batch:
		case <-ctx.Done():
			return
		}
	}
}

// readBatch returns the next batch: pending entries while any stream has
// some, new entries otherwise, lingering to fill the batch when
// configured. It pauses PollInterval when there is nothing to read.
func (c *Consumer) readBatch(ctx context.Context) ([]Entry, error) {
	batch, pending, err := c.round(ctx, c.cfg.Count)
	if err != nil || pending {
		return batch, err
	}
	if len(batch) == 0 {
		backoff.Sleep(ctx, c.cfg.PollInterval)
		return nil, nil
	}
	deadline := time.Now().Add(c.cfg.Linger)
	for len(batch) < c.cfg.Count && time.Until(deadline) > 0 {
		more, _, err := c.round(ctx, c.cfg.Count-len(batch))
		if err != nil {
			// What was read is pending with this consumer: hand it over
			// rather than lose track of it.
			break
		}
		batch = append(batch, more...)
		if len(more) == 0 {
			backoff.Sleep(ctx, min(c.cfg.PollInterval, time.Until(deadline)))
		}
	}
	return batch, nil
}

// batch handles one batch until it is stored (then acknowledged), or
// split into single entries after a Permanent error, or ctx ends.
func (c *Consumer) batch(ctx context.Context, h BatchHandler, batch []Entry) {
	err := c.handle(ctx, batch, []zap.Field{zap.Int("entries", len(batch))}, func() error { return h(ctx, batch) })
	switch {
	case err == nil:
		c.ack(ctx, batch)
	case IsPermanent(err) && len(batch) == 1:
		e := batch[0]
		c.deadLetter(ctx, e.Stream, e.ID, e.values, e.Deliveries, ReasonRejected, err)
	case IsPermanent(err):
		for i := range batch {
			c.batch(ctx, h, batch[i:i+1])
		}
	}
}
