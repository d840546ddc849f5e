package managedcert

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/internal/testenv"
)

// TestProvidersDocumented keeps docs/dns-providers.md and the table in
// step: every provider and every name it accepts appears in the page.
func TestProvidersDocumented(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "dns-providers.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, p := range ProviderNames() {
		spec := Providers[p]
		t.Run(p, func(t *testing.T) {
			if !strings.Contains(doc, "`"+p+"`") {
				t.Errorf("docs/dns-providers.md: provider %s missing", p)
			}
			for n := range spec.Names {
				if !strings.Contains(doc, "`"+spec.Prefix+n+"`") {
					t.Errorf("docs/dns-providers.md: credential %s%s missing", spec.Prefix, n)
				}
			}
		})
	}
}
