package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// FuzzReadImport feeds `certfleet import` file contents (CSV when csv,
// else NDJSON) to its readers: they never panic, every record is a
// non-empty JSON text (a CSV row an object with a string hostname), and
// line numbers rise strictly and stay within the file, which --resume
// relies on to skip what the server already acknowledged.
func FuzzReadImport(f *testing.F) {
	for _, seed := range []struct {
		text string
		csv  bool
	}{
		{"hostname,port,notes,tags\nshop.example.com,443,main shop,prod;eu\n", true},
		{"\ufeffHost, Port\n a.example , 8443\nb.example,x\n", true},
		{"hostname,notes\n\"multi\nline.example\",\"a \"\"quoted\"\" note\"\nc.example\n", true},
		{"hostname,hostname\na,b\n", true},
		{"port\n443\n", true},
		{"hostname,tags\nx.example,;;\n", true},
		{"", true},
		{"{\"hostname\":\"a.example\"}\n\n  {\"hostname\":\"b.example\",\"port\":8443}\r\n", false},
		{"not json\n\t\n{}", false},
	} {
		f.Add(seed.text, seed.csv)
	}
	f.Fuzz(func(t *testing.T, text string, isCSV bool) {
		read := readNDJSON
		if isCSV {
			read = readCSV
		}
		lines := strings.Count(text, "\n") + 1
		last := 0
		_ = read(skipBOM(strings.NewReader(text)), func(r importRecord) error {
			if r.line <= last || r.line > lines {
				t.Fatalf("line %d after line %d (file of %d lines)", r.line, last, lines)
			}
			last = r.line
			if len(bytes.TrimSpace(r.obj)) == 0 {
				t.Fatalf("line %d: an empty record", r.line)
			}
			if isCSV {
				var obj map[string]any
				if err := json.Unmarshal(r.obj, &obj); err != nil {
					t.Fatalf("line %d: %s is not a JSON object: %v", r.line, r.obj, err)
				}
				if _, ok := obj["hostname"].(string); !ok {
					t.Fatalf("line %d: %s has no string hostname", r.line, r.obj)
				}
			}
			return nil
		})
	})
}
