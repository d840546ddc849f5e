package notifier

import (
	"os"
	"testing"

	"github.com/certfleet/certfleet/internal/testenv"
)

// TestMain is the package's only one (email and digest tests share it).
func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
