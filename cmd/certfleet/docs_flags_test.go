package main

import (
	"context"
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

// TestRunningDocsCommands: the flags docs/running.md names in its table of
// commands and in its paragraph on the lab exist in that command's -h, and
// the paragraph names every flag of the lab.
func TestRunningDocsCommands(t *testing.T) {
	doc, err := os.ReadFile("../../docs/running.md")
	if err != nil {
		t.Fatal(err)
	}
	help := func(words []string) string {
		t.Helper()
		var out, errOut strings.Builder
		if code := runMain(context.Background(), append(slices.Clone(words), "-h"), &out, &errOut); code != 0 {
			t.Fatalf("certfleet %s -h: exit %d", strings.Join(words, " "), code)
		}
		return out.String() + errOut.String()
	}
	flagRE := regexp.MustCompile(`--([a-z][a-z0-9-]*)`)
	spanRE := regexp.MustCompile("`([^`]+)`")
	// commandOf is a span's command words: up to the first flag,
	// argument or choice.
	commandOf := func(span string) []string {
		var words []string
		for _, w := range strings.Fields(strings.TrimPrefix(span, "certfleet ")) {
			if strings.HasPrefix(w, "-") || strings.HasPrefix(w, "[") || strings.ContainsAny(w, `\|`) || strings.ToUpper(w) == w {
				break
			}
			words = append(words, w)
		}
		return words
	}
	checked := 0
	for _, line := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(line, "| `certfleet ") {
			continue
		}
		// The row's command, then each span: one naming the same command
		// (`apikey revoke --email E --id ID`) is checked against its own
		// -h, a flag alone (`--sink=false`) against the row's.
		spans := spanRE.FindAllStringSubmatch(line, -1)
		main := commandOf(spans[0][1])
		if len(main) == 0 || main[0] == "version" || main[0] == "ca" || main[0] == "quota" {
			continue // no flags of its own, or one set per action (their own tests)
		}
		for _, sp := range spans {
			words := main
			if w := commandOf(sp[1]); len(w) > 0 && w[0] == main[0] {
				words = w
			} else if !strings.HasPrefix(sp[1], "--") {
				continue
			}
			h := help(words)
			for _, m := range flagRE.FindAllStringSubmatch(sp[1], -1) {
				checked++
				if !strings.Contains(h, "--"+m[1]+" ") {
					t.Errorf("docs/running.md names --%s for certfleet %s, whose -h has no such flag", m[1], strings.Join(words, " "))
				}
			}
		}
	}
	_, para, ok := strings.Cut(string(doc), "`certfleet lab` takes ")
	para, _, _ = strings.Cut(para, "\n\n")
	if !ok {
		t.Fatal("docs/running.md has no paragraph on the lab's flags")
	}
	named := map[string]bool{}
	for _, m := range flagRE.FindAllStringSubmatch(para, -1) {
		named[m[1]] = true
	}
	fs := regexp.MustCompile(`(?m)^  --([a-z0-9-]+)  `)
	for _, m := range fs.FindAllStringSubmatch(help([]string{"lab"}), -1) {
		if m[1] != "config" && m[1] != "log-level" && !named[m[1]] {
			t.Errorf("the lab's --%s is missing from docs/running.md's paragraph on the lab", m[1])
		}
		delete(named, m[1])
	}
	for n := range named {
		t.Errorf("docs/running.md's paragraph on the lab names --%s, which the lab has not", n)
	}
	if checked < 5 {
		t.Errorf("checked %d flags of the table of commands, want more: the table's format changed", checked)
	}
}
