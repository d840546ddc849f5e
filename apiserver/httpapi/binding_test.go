package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
)

func TestBindJSON(t *testing.T) {
	type Base struct {
		ID string `json:"id"`
	}
	type request struct {
		Base
		Name    string          `json:"name"`
		Port    *int            `json:"port"`
		Ratio   float64         `json:"ratio"`
		Active  *bool           `json:"is_active"`
		Tags    []string        `json:"tags"`
		Extra   map[string]int  `json:"extra"`
		Skipped string          `json:"-"`
		Nested  struct{ A int } `json:"nested"`
	}
	tests := []struct {
		name, body string
		wantErr    string
	}{
		{"all fields", `{"id":"x","name":"n","port":443,"ratio":0.5,"is_active":true,"tags":["a"],"extra":{"a":1},"nested":{"A":1}}`, ""},
		{"nulls", `{"name":null,"port":null}`, ""},
		{"empty object", `{}`, ""},
		{"white space around", " \n{\"name\":\"n\"}\t", ""},
		{"unknown field", `{"nmae":"n"}`, `unknown field "nmae"`},
		{"skipped field", `{"Skipped":"x"}`, `unknown field "Skipped"`},
		{"string for int", `{"port":"443"}`, `field "port" must be a whole number`},
		{"fraction for int", `{"port":1.5}`, `field "port" must be a whole number`},
		{"string for float", `{"ratio":"x"}`, `field "ratio" must be a number`},
		{"number for bool", `{"is_active":1}`, `field "is_active" must be a boolean`},
		{"string for array", `{"tags":"a"}`, `field "tags" must be an array of strings`},
		{"number in array", `{"tags":[1]}`, `field "tags" must be an array of strings`},
		{"array for object", `{"extra":[]}`, `field "extra" must be an object`},
		{"wrong type inside an object", `{"nested":{"A":"x"}}`, `field "nested" must be an object`},
		{"number for embedded string", `{"id":1}`, `field "id" must be a string`},
		{"empty", ``, "request body is empty"},
		{"blank", "  \n", "request body is empty"},
		{"array", `[]`, "must be a JSON object"},
		{"string", `"x"`, "must be a JSON object"},
		{"broken", `{"name":"n"`, "not valid JSON"},
		{"two objects", `{}{}`, "not valid JSON"},
		{"form", `name=n`, "not valid JSON"},
		{"repeated field", `{"name":"a","name":"b"}`, `duplicate field "name"`},
		{"repeated field, escaped", `{"name":"a","n\u0061me":"b"}`, `duplicate field "name"`},
		{"repeated field, same value", `{"port":1,"id":"x","port":1}`, `duplicate field "port"`},
		{"repeated inside an object", `{"extra":{"a":1,"b":2,"a":3}}`, `duplicate field "extra.a"`},
		{"repeated inside a nested object", `{"nested":{"A":1,"A":2}}`, `duplicate field "nested.A"`},
		{"repeated unknown field", `{"nmae":"a","nmae":"b"}`, `duplicate field "nmae"`},
		{"names differing in case", `{"extra":{"a":1,"A":2}}`, ""},
		{"same name in two objects", `{"extra":{"a":1},"nested":{"A":1},"name":"a"}`, ""},
	}
	gin.SetMode(gin.ReleaseMode)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := gin.CreateTestContext(httptest.NewRecorder())
			c.Request = httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tc.body))
			var dst request
			err := BindJSON(c, &dst)
			if tc.wantErr == "" {
				if err != nil {
					t.Errorf("got %v, want no error", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("got %v, want an error mentioning %q", err, tc.wantErr)
			} else if e := AsError(err); e == nil || e.Status != http.StatusBadRequest {
				t.Errorf("got %#v, want an *Error answered 400", err)
			}
		})
	}
}
