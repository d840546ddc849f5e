package apiserver

import (
	"embed"
	"encoding/json"
	"fmt"
	"net/http"
	"path"
	"sort"

	"github.com/gin-gonic/gin"
)

// openAPIFiles are the parts of the OpenAPI 3 document: base.json holds the
// document's head, the KeyChest and core v1 routes; every other file adds
// the paths and components of one area (alerts, channels, client
// certificates, ...), so that each area documents itself beside its code.
//
//go:embed openapi/*.json
var openAPIFiles embed.FS

// openAPIDoc is the OpenAPI 3 document of every endpoint the server serves,
// merged from openAPIFiles; openapi_test.go checks it against the routes.
var openAPIDoc = mustMergeOpenAPI(openAPIFiles)

// openAPI is GET /api/openapi.json.
func (s *Server) openAPI(c *gin.Context) {
	c.Data(http.StatusOK, "application/json; charset=utf-8", openAPIDoc)
}

// mustMergeOpenAPI merges base.json with the "paths" and "components"
// sections of every other file. A part that does not parse, or that names a
// path or component another part names too, is a bug in the embedded files:
// it panics at start, and every test fails.
func mustMergeOpenAPI(files embed.FS) []byte {
	doc, err := mergeOpenAPI(files)
	if err != nil {
		panic(err)
	}
	return doc
}

func mergeOpenAPI(files embed.FS) ([]byte, error) {
	names, err := files.ReadDir("openapi")
	if err != nil {
		return nil, err
	}
	read := func(name string) (map[string]any, error) {
		raw, err := files.ReadFile(path.Join("openapi", name))
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("openapi/%s: %w", name, err)
		}
		return m, nil
	}
	doc, err := read("base.json")
	if err != nil {
		return nil, err
	}
	parts := make([]string, 0, len(names))
	for _, n := range names {
		if n.Name() != "base.json" {
			parts = append(parts, n.Name())
		}
	}
	sort.Strings(parts)
	for _, name := range parts {
		part, err := read(name)
		if err != nil {
			return nil, err
		}
		if err := mergeSection(doc, part, "paths", name); err != nil {
			return nil, err
		}
		comps, _ := part["components"].(map[string]any)
		for kind, v := range comps {
			into := section(doc, "components")
			if err := mergeSection(into, map[string]any{kind: v}, kind, name); err != nil {
				return nil, err
			}
		}
	}
	return json.MarshalIndent(doc, "", "  ")
}

// section returns doc[key] as an object, creating it when missing.
func section(doc map[string]any, key string) map[string]any {
	m, ok := doc[key].(map[string]any)
	if !ok {
		m = map[string]any{}
		doc[key] = m
	}
	return m
}

// mergeSection adds the entries of part[key] to doc[key]; an entry both
// have is an error.
func mergeSection(doc, part map[string]any, key, file string) error {
	entries, _ := part[key].(map[string]any)
	into := section(doc, key)
	for k, v := range entries {
		if _, dup := into[k]; dup {
			return fmt.Errorf("openapi/%s: %s %q is already documented by another part", file, key, k)
		}
		into[k] = v
	}
	return nil
}
