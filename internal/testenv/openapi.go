package testenv

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// Schema pairs a schema of an OpenAPI document with the Go type the
// server reads or writes for it.
type Schema struct {
	Name string
	Type reflect.Type
	// Required: the schema's required list must be exactly the fields
	// always written (responses whose area checks it).
	Required bool
}

// CheckSchemas keeps documented bodies true: every property a schema of
// doc documents is a JSON field of its Go type, and every field the type
// always writes is documented.
func CheckSchemas(t *testing.T, doc []byte, schemas []Schema) {
	t.Helper()
	var d struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
				Required   []string                   `json:"required"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		t.Fatal(err)
	}
	for _, tc := range schemas {
		t.Run(tc.Name, func(t *testing.T) {
			sc, ok := d.Components.Schemas[tc.Name]
			if !ok {
				t.Fatalf("schema %s not in openapi.json", tc.Name)
			}
			fields := map[string]bool{} // JSON name -> always written
			for i := range tc.Type.NumField() {
				f := tc.Type.Field(i)
				name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
				if !f.IsExported() || name == "-" {
					continue
				}
				if name == "" {
					name = f.Name
				}
				fields[name] = !strings.Contains(opts, "omitempty")
			}
			for p := range sc.Properties {
				if _, ok := fields[p]; !ok {
					t.Errorf("property %q is documented but %s has no such field", p, tc.Type)
				}
			}
			for name, always := range fields {
				if _, ok := sc.Properties[name]; always && !ok {
					t.Errorf("%s writes %q, which is not documented", tc.Type, name)
				}
			}
			if !tc.Required {
				return
			}
			var required []string
			for name, always := range fields {
				if always {
					required = append(required, name)
				}
			}
			slices.Sort(required)
			if got := slices.Sorted(slices.Values(sc.Required)); !reflect.DeepEqual(got, required) {
				t.Errorf("required: got %v, want %v (the fields always written)", got, required)
			}
		})
	}
}
