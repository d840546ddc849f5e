package managedcert

import (
	"encoding/json"
	"testing"

	"github.com/certfleet/certfleet/internal/guard"
)

// FuzzCheckCredentials feeds tenant-supplied accounts (a provider and a
// JSON object of credentials, as the API receives them) to the checks:
// they never panic, and what they accept has only names the provider reads
// and no endpoint the default policy refuses.
func FuzzCheckCredentials(f *testing.F) {
	f.Add("rfc2136", `{"RFC2136_NAMESERVER":"ns.example.com:53","RFC2136_TSIG_KEY":"k.","RFC2136_TSIG_SECRET":"c2Vj","RFC2136_TSIG_ALGORITHM":"hmac-sha256."}`)
	f.Add("rfc2136", `{"DNSUPDATE_NAMESERVER":"[::1]:53"}`)
	f.Add("httpreq", `{"HTTPREQ_ENDPOINT":"https://user:pw@10.0.0.1/x"}`)
	f.Add("cloudflare", `{"CF_API_EMAIL":"a@b.c","CF_API_KEY":"k","CLOUDFLARE_BASE_URL":"http://169.254.169.254"}`)
	f.Add("route53", `{"AWS_ACCESS_KEY_ID":"a","AWS_SECRET_ACCESS_KEY":"b","AWS_PROFILE":"x"}`)
	f.Fuzz(func(t *testing.T, provider, body string) {
		var creds map[string]string
		if json.Unmarshal([]byte(body), &creds) != nil {
			return
		}
		if CheckCredentials(provider, creds, guard.Policy{}) != nil {
			return
		}
		spec := Providers[provider]
		canon, err := Canonical(provider, creds)
		if err != nil {
			t.Fatalf("accepted but not canonical: %v", err)
		}
		for name, v := range canon {
			short := name[len(spec.Prefix):]
			if spec.Names[short] == credEndpoint {
				host, err := EndpointHost(v)
				if err != nil || (guard.Policy{}).CheckHost(host) != nil {
					t.Fatalf("accepted endpoint %s=%q refused by the default policy", name, v)
				}
			}
		}
	})
}
