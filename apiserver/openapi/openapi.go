// Package openapi is the OpenAPI 3 document of every endpoint the API
// server serves, merged from the parts beside it: base.json holds the
// document's head, the KeyChest and core v1 routes; every other part adds
// the paths and components of one area (alerts, channels, client
// certificates, ...).
package openapi

import (
	"embed"
	"encoding/json"
	"fmt"
	"sort"
)

// files are the parts of the document.
//
//go:embed *.json
var files embed.FS

// Document is the merged document; apiserver's tests check it against the
// routes, each API package's tests against its types.
var Document = mustMerge(files)

// mustMerge merges base.json with the "paths" and "components"
// sections of every other file. A part that does not parse, or that names a
// path or component another part names too, is a bug in the embedded files:
// it panics at start, and every test fails.
func mustMerge(files embed.FS) []byte {
	doc, err := merge(files)
	if err != nil {
		panic(err)
	}
	return doc
}

func merge(files embed.FS) ([]byte, error) {
	names, err := files.ReadDir(".")
	if err != nil {
		return nil, err
	}
	read := func(name string) (map[string]any, error) {
		raw, err := files.ReadFile(name)
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
