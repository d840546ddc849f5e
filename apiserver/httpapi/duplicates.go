package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// CheckDuplicateKeys refuses raw, a valid JSON text, when one of its
// objects, at any depth, holds a name twice: encoding/json keeps the last
// value silently, so {"hostname":"a","hostname":"b"} would add b while a
// proxy, a log or a signature check that reads the first saw a. The
// BadRequest names the key by its path ("hostname", "settings.email",
// "items[2].name"). Names are compared unescaped ("a" and "\u0061" are
// one name) and exactly, as DecodeObject matches fields. Text that is not
// valid JSON is the caller's to refuse: it gets nil here, never a panic.
func CheckDuplicateKeys(raw []byte) error {
	s := keyScanner{data: raw, names: make([][]byte, 0, 8)}
	if dup, ok := s.value(); ok {
		return BadRequest(fmt.Sprintf("duplicate field %q: a name may appear only once in an object", dup))
	}
	return nil
}

// smallObject is how many names an object holds before keyScanner looks
// them up in a map instead of comparing each: a body of thousands of
// names must not cost their square.
const smallObject = 16

// keyScanner walks a JSON text looking for a repeated name. It reads
// valid JSON only as far as it needs to: strings, numbers and literals are
// skipped, not checked, and nothing is allocated but for a name with an
// escape, an object of many names, or the path of the repeated one.
type keyScanner struct {
	data []byte
	i    int
	// names is a stack of the names of the objects being read, reused
	// across objects.
	names [][]byte
}

// value reads the value at s.i and returns the path, inside it, of the
// first repeated name.
func (s *keyScanner) value() (string, bool) {
	s.space()
	if s.i >= len(s.data) {
		return "", false
	}
	switch s.data[s.i] {
	case '{':
		return s.object()
	case '[':
		return s.array()
	case '"':
		s.str()
	default:
		for s.i < len(s.data) {
			switch s.data[s.i] {
			case ',', ']', '}', ' ', '\t', '\r', '\n':
				return "", false
			}
			s.i++
		}
	}
	return "", false
}

// object reads the object at s.i.
func (s *keyScanner) object() (string, bool) {
	s.i++ // {
	base := len(s.names)
	defer func() { s.names = s.names[:base] }()
	var many map[string]struct{}
	for {
		s.space()
		if s.i >= len(s.data) || s.data[s.i] != '"' {
			s.i++ // } (or not JSON: stop here)
			return "", false
		}
		name := s.name()
		seen := false
		if many != nil {
			_, seen = many[string(name)]
			many[string(name)] = struct{}{}
		} else {
			for _, n := range s.names[base:] {
				if bytes.Equal(n, name) {
					seen = true
					break
				}
			}
			s.names = append(s.names, name)
			if len(s.names)-base > smallObject {
				many = make(map[string]struct{}, 2*smallObject)
				for _, n := range s.names[base:] {
					many[string(n)] = struct{}{}
				}
			}
		}
		if seen {
			return string(name), true
		}
		s.space()
		s.i++ // :
		if dup, ok := s.value(); ok {
			return joinPath(string(name), dup), true
		}
		s.space()
		if s.i < len(s.data) && s.data[s.i] == ',' {
			s.i++
		}
	}
}

// array reads the array at s.i.
func (s *keyScanner) array() (string, bool) {
	s.i++ // [
	for n := 0; ; n++ {
		s.space()
		if s.i >= len(s.data) || s.data[s.i] == ']' {
			s.i++
			return "", false
		}
		from := s.i
		if dup, ok := s.value(); ok {
			return joinPath("["+strconv.Itoa(n)+"]", dup), true
		}
		s.space()
		switch {
		case s.i < len(s.data) && s.data[s.i] == ',':
			s.i++
		case s.i == from || s.i < len(s.data) && s.data[s.i] != ']':
			s.i = len(s.data) // not JSON: stop
		}
	}
}

// joinPath is the path of a repeated name found at dup inside the value
// at outer (a name, or an array index "[n]").
func joinPath(outer, dup string) string {
	if dup == "" || dup[0] != '[' {
		return outer + "." + dup
	}
	return outer + dup
}

// name reads the string at s.i, a name, unescaped.
func (s *keyScanner) name() []byte {
	from := s.i
	escaped := s.str()
	raw := s.data[from:min(s.i, len(s.data))]
	if !escaped {
		return bytes.TrimSuffix(raw[1:], []byte(`"`))
	}
	var name string
	if json.Unmarshal(raw, &name) != nil {
		return raw
	}
	return []byte(name)
}

// str skips the string at s.i and reports whether it holds an escape.
func (s *keyScanner) str() (escaped bool) {
	s.i++ // "
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case '\\':
			escaped = true
			s.i += 2
			continue
		case '"':
			s.i++
			return escaped
		}
		s.i++
	}
	return escaped
}

// space skips white space.
func (s *keyScanner) space() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\r', '\n':
			s.i++
		default:
			return
		}
	}
}
