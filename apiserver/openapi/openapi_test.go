package openapi

import (
	"reflect"
	"strings"
	"testing"
)

// Parts of the document merge their paths and components, and a part that
// documents what another already does is refused.
func TestOpenAPIMerge(t *testing.T) {
	base := map[string]any{"paths": map[string]any{"/a": 1}, "components": map[string]any{"schemas": map[string]any{"A": 1}}}
	part := map[string]any{"paths": map[string]any{"/b": 2}, "components": map[string]any{"schemas": map[string]any{"B": 2}}}
	if err := mergeSection(base, part, "paths", "part.json"); err != nil {
		t.Fatal(err)
	}
	if err := mergeSection(section(base, "components"), part["components"].(map[string]any), "schemas", "part.json"); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"paths": map[string]any{"/a": 1, "/b": 2}, "components": map[string]any{"schemas": map[string]any{"A": 1, "B": 2}}}
	if !reflect.DeepEqual(base, want) {
		t.Errorf("merged: got %v, want %v", base, want)
	}
	if err := mergeSection(base, part, "paths", "again.json"); err == nil || !strings.Contains(err.Error(), `"/b" is already documented`) {
		t.Errorf("merging a path twice: got %v, want an error naming /b", err)
	}
}
