package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"

	"github.com/gin-gonic/gin"
)

// BindJSON decodes the request body, a JSON object, into dst (a pointer to
// a struct) strictly: an unknown field, a field of the wrong type, a name
// given twice in an object at any depth (CheckDuplicateKeys), a body that
// is empty, not JSON or not an object is a BadRequest naming the problem
// (and the field); a body over the size limit is a 413 (ReadError). Field names match
// exactly, not ignoring case as encoding/json would. A null leaves the
// field as it is.
func BindJSON(c *gin.Context, dst any) error {
	body, err := io.ReadAll(c.Request.Body)
	if err != nil {
		return ReadError(err)
	}
	return DecodeObject("request body", body, dst)
}

// ReadError is the answer to err, an error reading a request body: a body
// over the server's limit (the route's http.MaxBytesReader) is a 413
// "request body too large: at most N bytes", whatever the route or API
// style; any other error a 400. Every handler that reads a body answers
// its read error with it.
func ReadError(err error) *Error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &Error{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("request body too large: at most %d bytes", mbe.Limit)}
	}
	return &Error{Status: http.StatusBadRequest, Msg: "cannot read request body"}
}

// DecodeObject decodes raw, one JSON object, into dst (a pointer to a
// struct) as strictly as BindJSON does; what names raw in the messages
// ("request body", "item"). POST /domains/bulk decodes each of its items
// with it, so an item is read exactly as the single add reads its body.
func DecodeObject(what string, raw []byte, dst any) error {
	body := bytes.TrimSpace(raw)
	if len(body) == 0 {
		return BadRequest(what + " is empty; send a JSON object")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		// Unmarshal checks the whole text before it decodes: a syntax
		// error is JSON that is broken, anything else JSON of another kind.
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return BadRequest(what + " is not valid JSON")
		}
		return BadRequest(what + " must be a JSON object")
	}
	if err := CheckDuplicateKeys(body); err != nil {
		return err
	}
	known := jsonFields(reflect.TypeOf(dst).Elem())
	for name := range obj {
		if _, ok := known[name]; !ok {
			return BadRequest(fmt.Sprintf("unknown field %q", name))
		}
	}
	if err := json.Unmarshal(body, dst); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			// Field is a path: "nested.inner" for a field inside an
			// object, "Embedded.name" for a promoted field. The first
			// element that is a top-level name is the one to name.
			for _, field := range strings.Split(te.Field, ".") {
				if t, ok := known[field]; ok {
					return BadRequest(fmt.Sprintf("field %q must be %s", field, jsonKind(t)))
				}
			}
			return BadRequest(fmt.Sprintf("field %q has the wrong type", te.Field))
		}
		return BadRequest(what + " is not valid JSON")
	}
	return nil
}

// BindOptionalJSON is BindJSON for a body that may be left out: an empty
// body leaves dst as it is.
func BindOptionalJSON(c *gin.Context, dst any) error {
	body, err := PeekBody(c)
	if err == nil && len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	return BindJSON(c, dst) // answers a read error too
}

// PeekBody reads the request body and leaves it for the handler to read
// again, read error included (such as a body over the limit).
func PeekBody(c *gin.Context) ([]byte, error) {
	if c.Request.Body == nil || c.Request.Body == http.NoBody {
		return nil, nil
	}
	body, err := io.ReadAll(c.Request.Body)
	var rest io.Reader = bytes.NewReader(body)
	if err != nil {
		rest = io.MultiReader(rest, errReader{err})
	}
	c.Request.Body = io.NopCloser(rest)
	return body, err
}

// errReader fails every read with its error.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// jsonFields maps the JSON names of a struct's fields to their types, as
// encoding/json sees them (fields of embedded structs without a tag are
// promoted).
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := make(map[string]reflect.Type, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Anonymous && name == "" {
			et := f.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				for n, ft := range jsonFields(et) {
					if _, ok := out[n]; !ok {
						out[n] = ft
					}
				}
				continue
			}
		}
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// jsonKind names what a value of t looks like in JSON, with its article.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeFor[json.RawMessage]() {
		return "a JSON value"
	}
	if t.Implements(reflect.TypeFor[json.Unmarshaler]()) || reflect.PointerTo(t).Implements(reflect.TypeFor[json.Unmarshaler]()) {
		return "a string"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "an array of " + strings.TrimPrefix(strings.TrimPrefix(jsonKind(t.Elem()), "a "), "an ") + "s"
	default:
		return "an object"
	}
}

// NullIfEmpty is s, or JSON null when s is empty.
func NullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
