package whois

import (
	"maps"
	"strings"
	"testing"
)

func TestParseServers(t *testing.T) {
	cases := []struct {
		name    string
		spec    []string
		want    map[string]string
		wantErr []string // every one in the joined error
	}{
		{name: "none", spec: nil, want: map[string]string{}},
		{
			name: "repeatable and comma-separated",
			spec: []string{"com=whois.example.net:4343", " .ORG = Whois.Example.org:43 , de=127.0.0.1:10043,"},
			want: map[string]string{"com": "whois.example.net:4343", "org": "whois.example.org:43", "de": "127.0.0.1:10043"},
		},
		{name: "port defaults to 43", spec: []string{"io=whois.nic.io"}, want: map[string]string{"io": "whois.nic.io:43"}},
		{name: "ipv6 literal", spec: []string{"jp=[::1]:43"}, want: map[string]string{"jp": "[::1]:43"}},
		{name: "same server twice is fine", spec: []string{"com=a.example:43", "com=a.example"}, want: map[string]string{"com": "a.example:43"}},
		{
			name:    "every bad entry at once",
			spec:    []string{"com", "co.uk=x:43", "org=x:0", "net=x:http", "=x:43", "de=", "com=a:43,com=b:43"},
			wantErr: []string{`"com": want TLD=HOST:PORT`, `TLD "co.uk"`, `port "0"`, `port "http"`, `TLD ""`, `"de="`, `TLD "com" already set to a:43`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseServers(tc.spec)
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("got %v and no error, want errors naming %q", got, tc.wantErr)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("got error %q, want it to name %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if !maps.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestIANAServer(t *testing.T) {
	cases := []struct{ sample, want string }{
		{"iana_com.txt", "whois.verisign-grs.com:43"},
		{"iana_none.txt", ""},
	}
	for _, tc := range cases {
		t.Run(tc.sample, func(t *testing.T) {
			if got := ianaServer(readSample(t, tc.sample)); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	// IANA's answer for a whole domain names the server on "refer:".
	if got, want := ianaServer([]byte("refer:        whois.nic.io\n\ndomain:       IO\n")), "whois.nic.io:43"; got != want {
		t.Errorf("refer: got %q, want %q", got, want)
	}
}
