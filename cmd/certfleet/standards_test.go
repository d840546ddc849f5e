package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// The project's written standards, checked over the repository's Go files
// (docs/operations.md "Fuzzing", /work/shared/STYLE.md, the architecture's
// "Security boundaries"): what a reviewer would otherwise grep for.

// repoGoFiles returns the repository's Go files by directory, relative to
// the root; .data (the demo's state) and tools (the tools module) are
// left out.
func repoGoFiles(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("../..", path)
		if d.IsDir() && (rel == ".data" || rel == "tools" || rel == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(rel, ".go") {
			out[filepath.Dir(rel)] = append(out[filepath.Dir(rel)], rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestFuzzTargetsHaveCorpusAndRow: every fuzz target has a committed seed
// corpus (testdata/fuzz/FuzzX/ beside it) and a row, with its package, in
// docs/operations.md's table of targets.
func TestFuzzTargetsHaveCorpusAndRow(t *testing.T) {
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][]string{} // package -> the targets its rows name
	code := regexp.MustCompile("`([^`]+)`")
	for _, line := range strings.Split(string(doc), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || !strings.Contains(cells[1], "`Fuzz") {
			continue
		}
		pkg := code.FindStringSubmatch(cells[2])
		if pkg == nil {
			continue
		}
		for _, m := range code.FindAllStringSubmatch(cells[1], -1) {
			rows[pkg[1]] = append(rows[pkg[1]], m[1])
		}
	}
	fuzzFunc := regexp.MustCompile(`(?m)^func (Fuzz\w+)\(`)
	n := 0
	for dir, files := range repoGoFiles(t) {
		for _, f := range files {
			if !strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(filepath.Join("../..", f))
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range fuzzFunc.FindAllStringSubmatch(string(src), -1) {
				n++
				name := m[1]
				seeds, _ := os.ReadDir(filepath.Join("../..", dir, "testdata", "fuzz", name))
				if len(seeds) == 0 {
					t.Errorf("%s: %s has no seed corpus in %s", f, name, filepath.Join(dir, "testdata", "fuzz", name))
				}
				if !slices.Contains(rows[filepath.ToSlash(dir)], name) {
					t.Errorf("%s: %s has no row of package %s in docs/operations.md's table of fuzz targets", f, name, dir)
				}
			}
		}
	}
	if n < 40 {
		t.Errorf("found %d fuzz targets, want the 40 or more there are: the search is broken", n)
	}
}

// TestPackagesDocumented: every package has a doc comment ("// Package x
// ...", or "// Command x ..." for main), which says what it is for.
func TestPackagesDocumented(t *testing.T) {
	doc := regexp.MustCompile(`(?m)^// (Package \w+|Command \w+) `)
	for dir, files := range repoGoFiles(t) {
		found, hasPkg := false, false
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			hasPkg = true
			src, err := os.ReadFile(filepath.Join("../..", f))
			if err != nil {
				t.Fatal(err)
			}
			found = found || doc.Match(src)
		}
		if hasPkg && !found {
			t.Errorf("package %s has no package doc comment (// Package x ...)", dir)
		}
	}
}

// TestOutboundThroughGuard: every outbound connection goes through
// internal/guard's dialer; a dialer or HTTP client made elsewhere is one
// of the exceptions below, each with its reason.
func TestOutboundThroughGuard(t *testing.T) {
	exceptions := map[string]string{
		"cmd/certfleet/import.go":       "the operator's CLI posting to the API server the operator names with --api, from the operator's machine",
		"internal/pebble/pebble.go":     "tests: the local Pebble's management API on 127.0.0.1",
		"internal/latency/latency.go":   "benchmarks: requests to the test's own servers",
		"internal/testenv/chcluster.go": "tests: waiting for the test's own ClickHouse port",
	}
	dial := regexp.MustCompile(`net\.Dial\(|net\.DialTimeout\(|&net\.Dialer\{|net\.Dialer\{|tls\.Dial\(|smtp\.Dial\(|http\.DefaultClient|http\.Get\(|http\.Post\(|http\.Head\(|&http\.Client\{|http\.DefaultTransport`)
	for dir, files := range repoGoFiles(t) {
		if dir == filepath.FromSlash("internal/guard") {
			continue
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(filepath.Join("../..", f))
			if err != nil {
				t.Fatal(err)
			}
			for i, line := range strings.Split(string(src), "\n") {
				if strings.HasPrefix(strings.TrimSpace(line), "//") || !dial.MatchString(line) {
					continue
				}
				if _, ok := exceptions[filepath.ToSlash(f)]; !ok {
					t.Errorf("%s:%d dials without internal/guard: %s", f, i+1, strings.TrimSpace(line))
				}
			}
		}
	}
}

// TestLogMessages: a zap message is a constant, lower-case text; what
// varies goes in fields (certmagic's habit, STYLE.md). A call counts as
// a zap call when its receiver's name says log or one of its arguments is
// a zap field; the message may be a constant concatenation.
func TestLogMessages(t *testing.T) {
	levels := map[string]bool{"Debug": true, "Info": true, "Warn": true, "Error": true, "DPanic": true, "Panic": true, "Fatal": true}
	calls := 0
	for _, files := range repoGoFiles(t) {
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			fset := token.NewFileSet()
			file, err := parser.ParseFile(fset, filepath.Join("../..", f), nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			ast.Inspect(file, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || len(call.Args) == 0 {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok || !levels[sel.Sel.Name] {
					return true
				}
				isLog := strings.Contains(strings.ToLower(types.ExprString(sel.X)), "log")
				for _, a := range call.Args[1:] {
					if c, ok := a.(*ast.CallExpr); ok {
						if s, ok := c.Fun.(*ast.SelectorExpr); ok {
							if id, ok := s.X.(*ast.Ident); ok && id.Name == "zap" {
								isLog = true
							}
						}
					}
				}
				if !isLog {
					return true
				}
				calls++
				msg, ok := constString(call.Args[0])
				switch {
				case !ok:
					t.Errorf("%s: log message %s is not a constant: put what varies in a field", fset.Position(call.Pos()), types.ExprString(call.Args[0]))
				case msg != "" && unicode.IsUpper([]rune(msg)[0]):
					t.Errorf("%s: log message %q is not lower-case", fset.Position(call.Pos()), msg)
				}
				return true
			})
		}
	}
	if calls < 200 {
		t.Errorf("found %d zap calls, want the 200 or more there are: the search is broken", calls)
	}
}

// constString is the value of a string literal or a + of them.
func constString(e ast.Expr) (string, bool) {
	switch v := e.(type) {
	case *ast.BasicLit:
		if v.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(v.Value)
		return s, err == nil
	case *ast.BinaryExpr:
		a, ok1 := constString(v.X)
		b, ok2 := constString(v.Y)
		return a + b, ok1 && ok2 && v.Op == token.ADD
	case *ast.ParenExpr:
		return constString(v.X)
	}
	return "", false
}
