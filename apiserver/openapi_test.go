package apiserver

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/certfleet/certfleet/apiserver/openapi"
	"github.com/certfleet/certfleet/internal/testenv"
)

// openAPIMethods are the operation keys of an OpenAPI path item.
var openAPIMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// ginParam is a path parameter as gin writes it (":id", "*rest").
var ginParam = regexp.MustCompile(`[:*]([A-Za-z0-9_]+)`)

// pathParam is a path parameter as OpenAPI writes it ("{id}").
var pathParam = regexp.MustCompile(`\{([A-Za-z0-9_]+)\}`)

// TestOpenAPICoversRoutes keeps the document true: every route the server
// serves is documented with its method, and every documented operation is
// served.
func TestOpenAPICoversRoutes(t *testing.T) {
	path, _ := operatorToken(t) // the operator routes are served only with one
	srv, err := New(Config{Operator: OperatorConfig{TokenFile: path}}, testenv.Redis(t).Client(t), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	doc := loadOpenAPI(t)

	// The dashboard's pages are HTML for people, not the API.
	pages := gin.New()
	srv.dash.Routes(pages)
	dashboard := map[string]bool{}
	for _, r := range pages.Routes() {
		dashboard[r.Method+" "+r.Path] = true
	}
	served := map[string]bool{}
	for _, r := range srv.engine.Routes() {
		if !dashboard[r.Method+" "+r.Path] {
			served[strings.ToLower(r.Method)+" "+ginParam.ReplaceAllString(r.Path, "{$1}")] = true
		}
	}
	documented := map[string]bool{}
	for path, item := range doc.Paths {
		for method := range item {
			if slices.Contains(openAPIMethods, method) {
				documented[method+" "+path] = true
			}
		}
	}
	for _, op := range sortedKeys(served) {
		if !documented[op] {
			t.Errorf("%s is served but not in openapi.json", op)
		}
	}
	for _, op := range sortedKeys(documented) {
		if !served[op] {
			t.Errorf("%s is in openapi.json but not served", op)
		}
	}
	if len(served) < 10 {
		t.Errorf("got %d routes, want the whole API", len(served))
	}
}

// TestOpenAPIDocument checks the document is OpenAPI 3 that hangs
// together: every operation has responses, every path parameter is
// declared, every $ref points into the document.
func TestOpenAPIDocument(t *testing.T) {
	doc := loadOpenAPI(t)
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi: got %q, want 3.x", doc.OpenAPI)
	}
	if doc.Info.Title == "" || doc.Info.Version == "" {
		t.Errorf("info: got %+v, want a title and a version", doc.Info)
	}
	var raw map[string]any
	if err := json.Unmarshal(openapi.Document, &raw); err != nil {
		t.Fatal(err)
	}
	for path, item := range doc.Paths {
		if !strings.HasPrefix(path, "/") {
			t.Errorf("path %q does not start with /", path)
		}
		for method, opRaw := range item {
			if !slices.Contains(openAPIMethods, method) {
				continue
			}
			var op struct {
				Responses  map[string]json.RawMessage `json:"responses"`
				Parameters []json.RawMessage          `json:"parameters"`
			}
			if err := json.Unmarshal(opRaw, &op); err != nil {
				t.Errorf("%s %s: %v", method, path, err)
				continue
			}
			if len(op.Responses) == 0 {
				t.Errorf("%s %s: no responses", method, path)
			}
			declared := map[string]bool{}
			for _, p := range op.Parameters {
				var param struct {
					Ref  string `json:"$ref"`
					Name string `json:"name"`
					In   string `json:"in"`
				}
				_ = json.Unmarshal(p, &param)
				if param.Ref != "" {
					resolved, ok := resolveRef(raw, param.Ref).(map[string]any)
					if !ok {
						continue // reported by the $ref walk below
					}
					param.Name, _ = resolved["name"].(string)
					param.In, _ = resolved["in"].(string)
				}
				if param.In == "path" {
					declared[param.Name] = true
				}
			}
			for _, m := range pathParam.FindAllStringSubmatch(path, -1) {
				if !declared[m[1]] {
					t.Errorf("%s %s: path parameter %q not declared", method, path, m[1])
				}
			}
		}
	}
	walkRefs(raw, func(ref string) {
		if resolveRef(raw, ref) == nil {
			t.Errorf("$ref %q points nowhere", ref)
		}
	})
}

// TestOpenAPIServed checks /api/openapi.json serves the embedded document.
func TestOpenAPIServed(t *testing.T) {
	path, _ := operatorToken(t) // the operator routes are served only with one
	srv, err := New(Config{Operator: OperatorConfig{TokenFile: path}}, testenv.Redis(t).Client(t), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	resp, err := http.Get(hs.URL + "/api/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || string(body) != string(openapi.Document) {
		t.Errorf("got HTTP %d %q with %d bytes, want 200 application/json with the %d-byte document",
			resp.StatusCode, resp.Header.Get("Content-Type"), len(body), len(openapi.Document))
	}
}

type openAPIFile struct {
	OpenAPI string `json:"openapi"`
	Info    struct {
		Title   string `json:"title"`
		Version string `json:"version"`
	} `json:"info"`
	Paths map[string]map[string]json.RawMessage `json:"paths"`
}

func loadOpenAPI(t *testing.T) openAPIFile {
	t.Helper()
	var doc openAPIFile
	if err := json.Unmarshal(openapi.Document, &doc); err != nil {
		t.Fatalf("openapi.json does not parse: %v", err)
	}
	if len(doc.Paths) == 0 {
		t.Fatal("openapi.json has no paths")
	}
	return doc
}

// walkRefs calls fn with every "$ref" value in v.
func walkRefs(v any, fn func(string)) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && k == "$ref" {
				fn(s)
				continue
			}
			walkRefs(x, fn)
		}
	case []any:
		for _, x := range v {
			walkRefs(x, fn)
		}
	}
}

// resolveRef follows a local reference ("#/components/schemas/Domain");
// nil when it leads nowhere.
func resolveRef(doc map[string]any, ref string) any {
	rest, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil
	}
	var cur any = doc
	for _, part := range strings.Split(rest, "/") {
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		if cur, ok = m[part]; !ok {
			return nil
		}
	}
	return cur
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Every tag an operation names is declared in base.json's tags.
func TestOpenAPITagsDeclared(t *testing.T) {
	var doc struct {
		Tags  []struct{ Name string } `json:"tags"`
		Paths map[string]map[string]json.RawMessage
	}
	if err := json.Unmarshal(openapi.Document, &doc); err != nil {
		t.Fatal(err)
	}
	declared := map[string]bool{}
	for _, tag := range doc.Tags {
		declared[tag.Name] = true
	}
	for path, item := range doc.Paths {
		for method, raw := range item {
			if !slices.Contains(openAPIMethods, method) {
				continue
			}
			var op struct{ Tags []string }
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			for _, tag := range op.Tags {
				if !declared[tag] {
					t.Errorf("%s %s uses tag %q, which base.json does not declare", method, path, tag)
				}
			}
		}
	}
}
