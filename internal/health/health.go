// Package health is how every role answers /healthz and /readyz.
// Components register checks: liveness (the process and its loops are
// alive; a loop that stopped for good fails it, and an orchestrator restarts
// the process) and readiness (dependencies answer and consumers keep up;
// failing it only takes the process out of rotation). A dependency going
// away must never fail liveness, so that a Redis or ClickHouse blip
// restarts nothing.
package health

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"
)

// Check reports a problem, or nil when all is well. It must return
// promptly; the handlers give every check a short deadline.
type Check func(ctx context.Context) error

// Registry holds the checks of one process.
type Registry struct {
	mu    sync.Mutex
	live  map[string]Check
	ready map[string]Check
}

// New returns an empty registry: both endpoints answer 200 until checks
// are added.
func New() *Registry {
	return &Registry{live: map[string]Check{}, ready: map[string]Check{}}
}

// Live registers a liveness check. A liveness check also counts for
// readiness: a dead loop is not ready either.
func (r *Registry) Live(name string, c Check) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.live[name] = c
}

// Ready registers a readiness check.
func (r *Registry) Ready(name string, c Check) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ready[name] = c
}

// Healthz answers 200 {"status":"ok"} when every liveness check passes,
// 503 {"status":"error","problems":[...]} otherwise.
func (r *Registry) Healthz() http.Handler { return r.handler(false) }

// Readyz answers like Healthz, over the liveness and readiness checks.
func (r *Registry) Readyz() http.Handler { return r.handler(true) }

// Problems runs the checks and returns the failures, sorted by name.
func (r *Registry) Problems(ctx context.Context, ready bool) []string {
	r.mu.Lock()
	checks := make(map[string]Check, len(r.live)+len(r.ready))
	for n, c := range r.live {
		checks[n] = c
	}
	if ready {
		for n, c := range r.ready {
			checks[n] = c
		}
	}
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, CheckTimeout)
	defer cancel()
	// A check that ignores its deadline (a client that dials a hung server
	// with its own, longer timeout) must not hold the answer: the endpoint
	// answers at the deadline, naming the checks still running, and those
	// finish in the background.
	type result struct {
		name string
		err  error
	}
	results := make(chan result, len(checks))
	pending := make(map[string]bool, len(checks))
	for name, c := range checks {
		pending[name] = true
		go func() { results <- result{name, c(ctx)} }()
	}
	var problems []string
	for len(pending) > 0 {
		select {
		case r := <-results:
			delete(pending, r.name)
			if r.err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", r.name, r.err))
			}
		case <-ctx.Done():
			for name := range pending {
				problems = append(problems, fmt.Sprintf("%s: no answer within %s", name, CheckTimeout))
			}
			pending = nil
		}
	}
	sort.Strings(problems)
	return problems
}

// CheckTimeout is how long /healthz and /readyz wait for their checks: a
// check not done by then counts as failed, and the endpoint answers then.
const CheckTimeout = 2 * time.Second

// answer is the body of both endpoints.
type answer struct {
	Status   string   `json:"status"`
	Problems []string `json:"problems,omitempty"`
}

func (r *Registry) handler(ready bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		body, code := answer{Status: "ok"}, http.StatusOK
		if p := r.Problems(req.Context(), ready); len(p) > 0 {
			body, code = answer{Status: "error", Problems: p}, http.StatusServiceUnavailable
		}
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	})
}

// PingFunc adapts a ping to a Check.
func PingFunc(ping func(ctx context.Context) error) Check {
	return func(ctx context.Context) error {
		if err := ping(ctx); err != nil {
			return fmt.Errorf("ping: %w", err)
		}
		return nil
	}
}
