package registration

import (
	"errors"
	"testing"
)

func TestRegistrable(t *testing.T) {
	tests := []struct {
		host, want string
		wantErr    bool
	}{
		{host: "www.example.com", want: "example.com"},
		{host: "a.b.example.co.uk.", want: "example.co.uk"},
		{host: "Shop.Example.DE", want: "example.de"},
		{host: "example.com", want: "example.com"},
		{host: "co.uk", wantErr: true},
		{host: "com", wantErr: true},
		{host: "", wantErr: true},
		{host: "192.0.2.1", wantErr: true},
		{host: "::1", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.host, func(t *testing.T) {
			got, err := Registrable(tc.host)
			if tc.wantErr {
				if !errors.Is(err, ErrNotRegistrable) {
					t.Fatalf("Registrable(%q) = %q, %v; want ErrNotRegistrable", tc.host, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Registrable(%q) = %q, %v; want %q", tc.host, got, err, tc.want)
			}
		})
	}
}

// FuzzRegistrable: never panics; a result is a suffix of the lower-cased
// host and is itself its own registrable domain.
func FuzzRegistrable(f *testing.F) {
	f.Fuzz(func(t *testing.T, host string) {
		d, err := Registrable(host)
		if err != nil {
			return
		}
		again, err := Registrable(d)
		if err != nil || again != d {
			t.Fatalf("Registrable(%q) = %q, but Registrable(%q) = %q, %v", host, d, d, again, err)
		}
	})
}
