package v1

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// FuzzParseBulk: no body makes POST /domains/bulk's parser panic, either
// as a JSON array or as NDJSON, nor any of its items the check of an item;
// what it accepts has 1 to max items in order, an accepted array is valid
// JSON, and an item that passes its check names a domain and a port; a
// body read after one byte order mark is read as the body alone.
func FuzzParseBulk(f *testing.F) {
	// testdata/fuzz/FuzzParseBulk holds the committed seeds; these are
	// the shapes every run starts from.
	f.Add([]byte(`[{"hostname":"example.com"},{"hostname":"example.org","port":8443,"tags":["a"]}]`), false)
	f.Add([]byte("{\"hostname\":\"example.com\"}\n\n{\"hostname\":\"x\",\"port\":\"1\"}\n[1]\n"), true)
	const max = 5
	f.Fuzz(func(t *testing.T, body []byte, ndjson bool) {
		items, err := parseBulk(body, ndjson, max)
		if !bytes.HasPrefix(body, bom) {
			marked, merr := parseBulk(append(bytes.Clone(bom), body...), ndjson, max)
			if !reflect.DeepEqual(marked, items) || (merr == nil) != (err == nil) {
				t.Fatalf("with a byte order mark: got %v, %v, want %v, %v", marked, merr, items, err)
			}
		}
		if err != nil {
			if items != nil {
				t.Fatalf("got items %v with error %v", items, err)
			}
			if errors.Is(err, errTooManyItems) && bytes.Count(body, []byte("\n")) < max-1 && ndjson {
				t.Fatalf("too many items in %d lines", bytes.Count(body, []byte("\n"))+1)
			}
			return
		}
		if len(items) == 0 || len(items) > max {
			t.Fatalf("got %d items, want 1 to %d", len(items), max)
		}
		if !ndjson && !json.Valid(TrimBOM(body)) {
			t.Fatalf("accepted an array that is not valid JSON: %q", body)
		}
		last := 0
		for i, it := range items {
			if ndjson {
				if it.line <= last {
					t.Fatalf("item %d: line %d after line %d", i, it.line, last)
				}
				last = it.line
			} else if it.line != 0 {
				t.Fatalf("item %d of an array: got line %d, want 0", i, it.line)
			}
			nd, err := it.check()
			if err == nil && (nd.Host == "" || nd.Port < 1 || nd.Port > 65535 || nd.Source != domainSourceImport) {
				t.Fatalf("item %d: accepted %+v", i, nd)
			}
		}
	})
}
