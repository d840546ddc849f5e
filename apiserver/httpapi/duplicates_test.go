package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestCheckDuplicateKeys(t *testing.T) {
	many := func(n int, repeat bool) string {
		names := make([]string, n)
		for i := range names {
			names[i] = fmt.Sprintf(`"k%d":%d`, i, i)
		}
		if repeat {
			names = append(names, `"k3":0`)
		}
		return "{" + strings.Join(names, ",") + "}"
	}
	// wantPath is the path the refusal names; "-" for none.
	tests := []struct {
		name, body, wantPath string
	}{
		{"none", `{"a":1,"b":{"a":1},"c":[{"a":1},{"a":2}]}`, "-"},
		{"top level", `{"hostname":"a.example.com","hostname":"b.example.com"}`, "hostname"},
		{"in an object", `{"a":{"x":1,"y":2,"x":3}}`, "a.x"},
		{"in an array element", `{"items":[{"n":1},{"n":1,"n":2}]}`, "items[1].n"},
		{"in an array of arrays", `{"m":[[],[{"a":1,"a":1}]]}`, "m[1][0].a"},
		{"top-level array", `[{"a":1},{"a":1,"a":2}]`, "[1].a"},
		{"escaped name", `{"a\"b":1,"a\u0022b":2}`, `a"b`},
		{"empty name", `{"":1,"":2}`, ""},
		{"names in strings do not count", `{"a":"\"a\":1","b":"{\"a\":1,\"a\":2}"}`, "-"},
		{"white space", " { \"a\" : 1 ,\n\t\"a\" : 2 } ", "a"},
		{"after many names", many(40, true), "k3"},
		{"many names", many(40, false), "-"},
		{"scalars", `"x"`, "-"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckDuplicateKeys([]byte(tc.body))
			if tc.wantPath == "-" {
				if err != nil {
					t.Errorf("got %v, want nil", err)
				}
				return
			}
			if e := AsError(err); e == nil || e.Status != 400 || !strings.Contains(e.Msg, fmt.Sprintf("%q", tc.wantPath)) {
				t.Errorf("got %v, want a 400 naming %q", err, tc.wantPath)
			}
		})
	}
}

// hasDuplicate is CheckDuplicateKeys written the slow, plain way, with
// encoding/json's tokenizer: the fuzz target's reference. It reads a
// valid JSON text.
func hasDuplicate(raw []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(raw))
	type frame struct {
		object  bool
		names   map[string]bool
		wantKey bool
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.wantKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				if len(stack) > 0 && stack[len(stack)-1].object {
					stack[len(stack)-1].wantKey = true
				}
				continue
			}
			name := tok.(string)
			if top.names[name] {
				return true
			}
			top.names[name] = true
			top.wantKey = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, names: map[string]bool{}, wantKey: true})
			continue
		case json.Delim('['):
			stack = append(stack, &frame{})
			continue
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if len(stack) > 0 && stack[len(stack)-1].object {
			stack[len(stack)-1].wantKey = true
		}
	}
}

// FuzzCheckDuplicateKeys: on valid JSON, CheckDuplicateKeys finds a
// repeated name exactly when the tokenizer-based reference does; on
// anything else it returns, without a panic.
func FuzzCheckDuplicateKeys(f *testing.F) {
	for _, s := range []string{`{"a":1,"a":2}`, `{"a":{"b":[{"c":1,"c":2}]}}`, `{"a\u0062":1,"ab":2}`, `[{"":1,"":1}]`,
		`{"a":"\\","b":"\"a\""}`, `{"a":[1,"x",true,null,{}],"b":{}}`, `{"a":`, `{"a" 1 "a":2}`, `[,]`, `{:}`, `"\`, `x`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		err := CheckDuplicateKeys(raw)
		if !json.Valid(raw) {
			return
		}
		if want := hasDuplicate(raw); (err != nil) != want {
			t.Fatalf("%q: got %v, want a duplicate %v", raw, err, want)
		}
	})
}

// BenchmarkDecodeObject: a bulk item checked for repeated names
// (CheckDuplicateKeys) and decoded whole (DecodeObject, which checks it),
// each reported as a ratio to encoding/json decoding it alone, the
// baseline measured in the same run.
func BenchmarkDecodeObject(b *testing.B) {
	item := []byte(`{"hostname":"shop-1234.example.com","port":8443,"notes":"billing team, renew by hand","tags":["prod","eu","billing"]}`)
	type request struct {
		Hostname string   `json:"hostname"`
		Port     *int     `json:"port"`
		Notes    string   `json:"notes"`
		Tags     []string `json:"tags"`
	}
	perOp := func(b *testing.B) float64 { return float64(b.Elapsed().Nanoseconds()) / float64(b.N) }
	var base float64
	b.Run("json.Unmarshal", func(b *testing.B) {
		for b.Loop() {
			var r request
			if err := json.Unmarshal(item, &r); err != nil {
				b.Fatal(err)
			}
		}
		base = perOp(b)
	})
	b.Run("CheckDuplicateKeys", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := CheckDuplicateKeys(item); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(perOp(b)/base, "ratio-to-unmarshal")
	})
	b.Run("DecodeObject", func(b *testing.B) {
		for b.Loop() {
			var r request
			if err := DecodeObject("item", item, &r); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(perOp(b)/base, "ratio-to-unmarshal")
	})
}
