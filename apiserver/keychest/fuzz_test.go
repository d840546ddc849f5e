package keychest

import (
	"errors"
	"net/http"
	"testing"

	"github.com/certfleet/certfleet/apiserver/httpapi"
)

// FuzzParseFields: a KeyChest body (JSON or a form, whatever its
// Content-Type says) either yields every named field, non-empty, or is
// refused with a 400 naming the problem; a JSON body that gives a name
// twice is refused.
func FuzzParseFields(f *testing.F) {
	f.Add(`{"api_key":"0123456789abcdef","domain":"example.com"}`, "application/json")
	f.Add(`api_key=0123456789abcdef&domain=example.com`, "application/x-www-form-urlencoded")
	f.Add(`{"api_key":1}`, "")
	f.Add(`domain=%zz`, "")
	f.Add(``, "text/plain")
	f.Add(`{"api_key":"k","domain":null}`, "application/json; charset=utf-8")
	f.Fuzz(func(t *testing.T, body, contentType string) {
		out, err := parseFields([]byte(body), contentType, "api_key", "domain")
		if err != nil {
			var e *httpapi.Error
			if !errors.As(err, &e) || e.Status != http.StatusBadRequest || e.Msg == "" {
				t.Fatalf("refusal of %q (%q): got %v, want a 400 with a message", body, contentType, err)
			}
			return
		}
		if body != "" && body[0] == '{' && httpapi.CheckDuplicateKeys([]byte(body)) != nil {
			t.Fatalf("accepted %q, which gives a name twice", body)
		}
		if out["api_key"] == "" || out["domain"] == "" {
			t.Fatalf("accepted %q (%q) without both fields: %v", body, contentType, out)
		}
	})
}
