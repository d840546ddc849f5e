package chaos

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/domainindex"
)

// TestViewsRebuildInterrupted sends SIGTERM to `certfleet views rebuild
// --full` at points spread over its run, while the fleet runs: the tool
// stops saying so (exit status 1), never halfway through a tenant's list
// index, so every tenant's index stays built and a list sorted by expiry
// still has all of a tenant's domains; a domain added afterwards is
// scanned and stored as before.
func TestViewsRebuildInterrupted(t *testing.T) {
	s := suite(t)
	f := newFleet(t, s)
	ctx := context.Background()
	tn := f.newTenant()
	key := f.bearer(tn.email)
	for _, tg := range f.lab.Targets() {
		f.add(tn, tg.Domain)
	}
	for range 5 {
		f.load()
	}
	time.Sleep(s.load)
	before := f.probe(time.Minute)

	// after counts from the tool's first line (its debug log of the
	// ClickHouse connection), which it writes after its signal handler
	// is in place: a SIGTERM before that (36 ms after the start once, with
	// the machine loaded) ends the process as it would any program.
	rebuild := func(after time.Duration) (error, string, time.Duration) {
		t.Helper()
		args := append([]string{"views", "rebuild", "--full", "--clickhouse-dsn", f.ch.DSN}, f.common...)
		cmd := exec.Command(f.bin, append(args, "--log-level", "debug")...)
		out := &firstWrite{wrote: make(chan struct{})}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if after > 0 {
			select {
			case <-out.wrote:
				start = time.Now()
			case <-time.After(30 * time.Second):
				t.Fatal("views rebuild wrote nothing in 30 s")
			}
			time.Sleep(after)
			_ = cmd.Process.Signal(syscall.SIGTERM)
		}
		err := cmd.Wait()
		return err, out.String(), time.Since(start)
	}
	if err, out, _ := rebuild(0); err != nil {
		t.Fatalf("views rebuild: %v\n%s", err, out)
	}
	_, _, whole := rebuild(0)
	interrupted := 0
	for i := 1; i <= 9; i++ {
		at := whole * time.Duration(i) / 10
		err, out, took := rebuild(at)
		var exit *exec.ExitError
		switch {
		case err == nil:
			// Done before the signal.
		case errors.As(err, &exit) && exit.ExitCode() == 1 && strings.Contains(out, "interrupted, run it again"):
			interrupted++
		default:
			t.Errorf("views rebuild, SIGTERM after %s: %v after %s, want exit status 1 saying it was interrupted\n%s",
				at.Round(time.Millisecond), err, took.Round(time.Millisecond), tail0(out, 3))
		}
		tenants, err := accounts.DomainTenants(ctx, f.rdb)
		if err != nil {
			t.Fatal(err)
		}
		for _, tenant := range tenants {
			if ok, err := domainindex.Built(ctx, f.rdb, tenant); err != nil || !ok {
				t.Errorf("views rebuild, SIGTERM after %s: list index of tenant %s not built (%v)", at.Round(time.Millisecond), tenant, err)
			}
		}
		code, _, body := f.send(key, http.MethodGet, "/api/v1/domains?sort=ssl_days_remaining&per_page=100", nil)
		if want := `"total":17`; code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("views rebuild, SIGTERM after %s: list by expiry answered %d, want %s: %s", at.Round(time.Millisecond), code, want, tail0(body, 1))
		}
	}
	after := f.probe(time.Minute)
	f.alive()
	t.Logf("views rebuild --full (%d tenants, %s uninterrupted): %d of 9 runs interrupted by SIGTERM, every list index whole; a new domain stored in %s after (%s before)",
		f.tenants, whole.Round(time.Millisecond), interrupted, after.Round(time.Millisecond), before.Round(time.Millisecond))
	if interrupted == 0 {
		t.Errorf("no run was interrupted: the signals all came after the rebuild ended (%s)", whole)
	}
}

// tail0 is the last n lines of s.
func tail0(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// firstWrite is a process's output, closing wrote at its first write.
type firstWrite struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	once  sync.Once
	wrote chan struct{}
}

func (w *firstWrite) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.wrote) })
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *firstWrite) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
