package sink

import (
	"testing"
	"time"
)

// The sink retries a failed batch at least every 4s once the pause has
// grown: that is how long a batch may wait after ClickHouse answers again
// (issue 12 asks for 5s; the retry's own insert takes the rest).
func TestRetryCeiling(t *testing.T) {
	var c Config
	c.setDefaults()
	if c.Retry.Max > 4*time.Second {
		t.Fatalf("retry ceiling: got %s, want at most 4s", c.Retry.Max)
	}
	for failures := 1; failures < 20; failures++ {
		if d := c.Retry.Delay(failures); d > 4*time.Second {
			t.Fatalf("pause after %d failures: got %s, want at most 4s", failures, d)
		}
	}
}
