package httpapi

import (
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"
)

func TestPageParam(t *testing.T) {
	tests := []struct {
		name, query string
		def, max    int
		want        int
		wantErr     string
	}{
		{"absent", "", 7, 100, 7, ""},
		{"given", "n=3", 7, 100, 3, ""},
		{"at max", "n=100", 7, 100, 100, ""},
		{"over max", "n=101", 7, 100, 0, `n must be a whole number from 1 to 100, got "101"`},
		{"zero", "n=0", 7, 100, 0, `n must be a whole number from 1 to 100, got "0"`},
		{"empty", "n=", 7, 100, 0, `n must be a whole number from 1 to 100, got ""`},
		{"not a number", "n=2x", 7, 100, 0, `n must be a whole number from 1 to 100, got "2x"`},
		{"no max", "n=100000", 1, 0, 100000, ""},
		{"no max, zero", "n=0", 1, 0, 0, `n must be a whole number of at least 1, got "0"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := gin.CreateTestContext(httptest.NewRecorder())
			c.Request = httptest.NewRequest("GET", "/x?"+tc.query, nil)
			got, err := PageParam(c, "n", tc.def, tc.max)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if got != tc.want || gotErr != tc.wantErr {
				t.Errorf("got %d %q, want %d %q", got, gotErr, tc.want, tc.wantErr)
			}
		})
	}
}
