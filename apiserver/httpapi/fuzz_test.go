package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
)

// FuzzBindJSON: every body either binds, and then is a JSON object whose
// names are all fields of the struct, none given twice in an object, and
// re-encodes to something that binds again, or is refused with a 400
// BadRequest; never a panic nor another kind of error.
func FuzzBindJSON(f *testing.F) {
	type request struct {
		Hostname string   `json:"hostname"`
		Port     *int     `json:"port"`
		Active   *bool    `json:"is_active"`
		Tags     []string `json:"tags"`
		Notes    *string  `json:"notes"`
	}
	for _, s := range []string{`{"hostname":"example.com","port":443}`, `{}`, `[]`, `{"port":"x"}`, `{"Hostname":"x"}`,
		`{"tags":[1]}`, "{\"notes\":\"\\u0000\"}", `{"port":1e400}`, `nul`, ``,
		`{"hostname":"a.example.com","hostname":"b.example.com"}`, `{"tags":["a"],"t\u0061gs":["b"]}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		bind := func(body string) (request, error) {
			c, _ := gin.CreateTestContext(httptest.NewRecorder())
			c.Request = httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
			var r request
			return r, BindJSON(c, &r)
		}
		r, err := bind(body)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Status != http.StatusBadRequest || e.Msg == "" {
				t.Fatalf("refusal of %q: got %v, want a 400 with a message", body, err)
			}
			return
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal([]byte(body), &obj) != nil || obj == nil {
			t.Fatalf("bound %q, which is not a JSON object", body)
		}
		if hasDuplicate([]byte(body)) {
			t.Fatalf("bound %q, which gives a name twice", body)
		}
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bind(string(again)); err != nil {
			t.Fatalf("re-encoded %q does not bind: %v", again, err)
		}
	})
}
