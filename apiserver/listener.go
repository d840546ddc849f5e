package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Listener is the API server's HTTP listener and server. A role binds it
// before it builds the Server (Listen), so that its port answers at once
// (/healthz alive, /readyz not ready and why) while the role still waits
// for Redis or builds its indexes; Serve then serves the whole API on
// the same socket by swapping the handler atomically: the port is never
// closed and bound again, so no probe or client sees it refuse.
type Listener struct {
	addr    string
	srv     *http.Server
	handler atomic.Pointer[http.Handler]
	// done is closed when srv.Serve returned, with its error in serveErr.
	done     chan struct{}
	serveErr error
	// shutdown stops srv once, within its timeout: by Serve when the
	// server stops, or by Close for a role that returns before it serves.
	shutdown func(timeout time.Duration) error
}

// listenShutdownTimeout is how long Close waits for requests in flight
// to the handler that served before the API.
const listenShutdownTimeout = 5 * time.Second

// Listen binds addr and serves starting there from now on until Serve
// puts the API in its place or Close stops it. checkTimeout is
// Config.CheckTimeout: a manual check holds its request that long, and
// its answer (a 504 at worst) must still be written. A port that cannot
// be bound fails here, at once.
func Listen(addr string, checkTimeout time.Duration, starting http.Handler, logger *zap.Logger) (*Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	l := &Listener{addr: addr, done: make(chan struct{})}
	l.handler.Store(&starting)
	l.srv = &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*l.handler.Load()).ServeHTTP(w, r) }),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      max(30*time.Second, checkTimeout+10*time.Second),
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          zap.NewStdLog(logger.Named("http")),
	}
	var once sync.Once
	var shutErr error
	l.shutdown = func(timeout time.Duration) error {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			shutErr = l.srv.Shutdown(ctx)
			<-l.done
		})
		return shutErr
	}
	go func() {
		l.serveErr = l.srv.Serve(ln)
		close(l.done)
	}()
	logger.Info("listening", zap.String("addr", ln.Addr().String()))
	return l, nil
}

// Close stops serving, for a role that returns before Serve (stopped
// while it waited for Redis, or failed to start): a no-op after Serve.
func (l *Listener) Close() { _ = l.shutdown(listenShutdownTimeout) }

// Serve serves the API on l (bound by Listen) until ctx is done, then
// shuts down gracefully: requests that wait answer at once (stopping),
// the rest get Config.ShutdownTimeout to finish.
func (s *Server) Serve(ctx context.Context, l *Listener) error {
	var h http.Handler = s.engine
	l.handler.Store(&h)
	select {
	case <-l.done:
		if errors.Is(l.serveErr, http.ErrServerClosed) {
			return nil // Close was called
		}
		return fmt.Errorf("serve %s: %w", l.addr, l.serveErr)
	case <-ctx.Done():
	}
	close(s.stopping)
	if err := l.shutdown(s.cfg.ShutdownTimeout); err != nil {
		return fmt.Errorf("shutdown %s: %w", l.addr, err)
	}
	s.logger.Info("stopped")
	return nil
}

// Run serves on cfg.Listen until ctx is done, then shuts down gracefully:
// Listen and Serve, for a caller with nothing to answer before the
// server is built.
func (s *Server) Run(ctx context.Context) error {
	l, err := Listen(s.cfg.Listen, s.cfg.CheckTimeout, s.engine, s.logger)
	if err != nil {
		return err
	}
	return s.Serve(ctx, l)
}
