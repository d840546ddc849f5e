package main

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/certfleet/certfleet/"

// importRules: the roles meet only through events and internal/ (see
// shared ARCHITECTURE.md). A package matching from must not depend,
// directly or not, on a package matching to.
var importRules = []struct{ from, to string }{
	{"apiserver", "coordinator"},
	{"agent", "coordinator"},
	{"agent", "apiserver"},
	{"coordinator", "agent"},
}

// under reports whether the import path pkg is the module's dir or below it.
func under(pkg, dir string) bool {
	return pkg == module+dir || strings.HasPrefix(pkg, module+dir+"/")
}

// TestImportRules lists every package's dependencies (not its tests') with
// go list -deps and checks importRules.
func TestImportRules(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list over the module")
	}
	cmd := exec.Command("go", "list", "-json=ImportPath,Deps", module+"...")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(out)
	checked := map[string]int{}
	for {
		var p struct {
			ImportPath string
			Deps       []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode go list: %v", err)
		}
		for _, r := range importRules {
			if !under(p.ImportPath, r.from) {
				continue
			}
			checked[r.from]++
			for _, d := range p.Deps {
				if under(d, r.to) {
					t.Errorf("%s depends on %s: %s/... must not depend on %s/...", p.ImportPath, d, r.from, r.to)
				}
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, r := range importRules {
		if checked[r.from] == 0 {
			t.Errorf("no package under %s checked, want some", r.from)
		}
	}
}
