package latency

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	if got := Percentile(ds, 50); got != 51*time.Millisecond {
		t.Errorf("p50 = %s, want 51ms", got)
	}
	if got := Percentile(ds, 99); got != 100*time.Millisecond {
		t.Errorf("p99 = %s, want 100ms", got)
	}
	if ds[0] != 100*time.Millisecond {
		t.Error("Percentile sorted its argument")
	}
	if Percentile(nil, 99) != 0 {
		t.Error("p99 of nothing is not 0")
	}
}

func TestMeasure(t *testing.T) {
	c := Client()
	r, err := Measure(c, HelloWorld(t), "", 4, 10)
	if err != nil || r.P99 <= 0 || r.P50 > r.P99 {
		t.Fatalf("hello-world: %+v, %v", r, err)
	}
	// A slow handler shows in p99; a refused key fails the measurement.
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get("Authorization") != "Bearer k" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}))
	defer slow.Close()
	if r, err := Measure(c, slow.URL, "k", 2, 3); err != nil || r.P99 < 20*time.Millisecond {
		t.Errorf("slow handler: %+v, %v; want p99 at least 20ms", r, err)
	}
	if _, err := Measure(c, slow.URL, "wrong", 2, 3); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("refused key: err = %v, want HTTP 401", err)
	}
}
