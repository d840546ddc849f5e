package main

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRunningDocsFlags compares docs/running.md's flag table with the
// roles' flag sets: every flag of the table exists in each role the row
// names, with the default the row states (durations compared as
// durations; a default in words, such as "system", is not compared), and
// every flag of a role is documented in docs/.
func TestRunningDocsFlags(t *testing.T) {
	doc, err := os.ReadFile("../../docs/running.md")
	if err != nil {
		t.Fatal(err)
	}
	roles := []string{"all", "apiserver", "coordinator", "agent"}
	sets := map[string]*flag.FlagSet{}
	for _, r := range roles {
		sets[r] = roleFlags(r).FlagSet
	}
	code := regexp.MustCompile("`([^`]*)`")
	documented := map[string]bool{}
	rows := 0
	for _, line := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(line, "| `--") {
			continue
		}
		rows++
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 4 {
			t.Errorf("row %q: want 4 cells", line)
			continue
		}
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		var names []string
		for _, m := range code.FindAllStringSubmatch(cells[0], -1) {
			names = append(names, strings.TrimPrefix(m[1], "--"))
		}
		// The roles the row names: "all roles" are the four; tools
		// (migrate, ca init, ...) have their own tests.
		var in []string
		switch rc := cells[1]; {
		case strings.HasPrefix(rc, "all roles"), rc == "every command":
			in = roles
		default:
			for _, r := range strings.Split(rc, ",") {
				if r = strings.TrimSpace(r); slices.Contains(roles, r) {
					in = append(in, r)
				}
			}
		}
		if len(in) == 0 {
			t.Errorf("row of %v names no role: %q", names, cells[1])
		}
		// The default: code spans ("`1s` / `5m`" for two flags), or none
		// said as "empty"; one in words ("system", "the embedded IANA
		// `dns.json`", "`http://<listen>`") is not compared, nor one per
		// command ("`info`; `warn` for ...": TestResultCommandsLogQuietly).
		var defs []string
		switch dc := cells[2]; {
		case dc == "" || dc == "empty" || dc == "(empty)" || dc == "none":
			defs = []string{""}
		case strings.HasPrefix(dc, "`") && !strings.Contains(dc, "<") && !strings.Contains(dc, "; "):
			for _, m := range code.FindAllStringSubmatch(dc, -1) {
				defs = append(defs, m[1])
			}
		}
		for i, name := range names {
			documented[name] = true
			for _, r := range in {
				fl := sets[r].Lookup(name)
				if fl == nil {
					t.Errorf("--%s: docs/running.md lists it for %s, which has no such flag", name, r)
					continue
				}
				if len(defs) == 0 {
					continue // a default in words
				}
				want := defs[min(i, len(defs)-1)]
				if name == "metrics-listen" && r == "agent" {
					want = "127.0.0.1" + defs[1] // "`127.0.0.1:9464` / `:9465`": coordinator / agent
				} else if name == "metrics-listen" {
					want = defs[0]
				}
				if !sameDefault(want, fl.DefValue) {
					t.Errorf("--%s of %s: docs/running.md says default %q, the flag's is %q", name, r, want, fl.DefValue)
				}
			}
		}
	}
	if rows < 50 {
		t.Fatalf("found %d flag rows in docs/running.md: the table's format changed", rows)
	}
	// Every flag of a role is documented: in the table, or (a feature's
	// own flags) in that feature's page of docs/.
	var all strings.Builder
	pages, _ := filepath.Glob("../../docs/*.md")
	for _, p := range pages {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		all.Write(b)
	}
	for _, r := range roles {
		sets[r].VisitAll(func(fl *flag.Flag) {
			if !documented[fl.Name] && !strings.Contains(all.String(), "`--"+fl.Name) {
				t.Errorf("--%s of %s is documented nowhere in docs/", fl.Name, r)
			}
		})
	}
}

// sameDefault tells whether a documented default names the flag's.
func sameDefault(doc, def string) bool {
	if doc == def {
		return true
	}
	d1, err1 := time.ParseDuration(doc)
	d2, err2 := time.ParseDuration(def)
	return err1 == nil && err2 == nil && d1 == d2
}
