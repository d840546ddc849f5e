package managedcert

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"os"
	"strings"
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

// FuzzParseMaterial feeds an ACME CA's answer (the full chain PEM) and a
// key PEM to ParseMaterial: it never panics, and what it accepts has the
// leaf it returns as its one certificate block, a chain without leading
// blank lines, and the key as given.
func FuzzParseMaterial(f *testing.F) {
	pemFile, err := os.ReadFile("../../apiserver/clientca/testdata/fuzz-ca.pem")
	if err != nil {
		f.Fatal(err)
	}
	i := bytes.Index(pemFile, []byte("-----BEGIN PRIVATE KEY"))
	cert, key := pemFile[:i], pemFile[i:]
	f.Add(cert, key)
	f.Add(append(append(bytes.Clone(cert), "\n\n"...), cert...), key)
	f.Add(key, cert)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), key)
	f.Add(cert, []byte("not pem"))
	f.Fuzz(func(t *testing.T, chain, key []byte) {
		m, leaf, err := ParseMaterial(chain, key)
		if err != nil {
			if leaf != nil {
				t.Fatal("an error with a leaf")
			}
			return
		}
		block, rest := pem.Decode([]byte(m.CertPEM))
		if leaf == nil || block == nil || block.Type != "CERTIFICATE" || !bytes.Equal(block.Bytes, leaf.Raw) || len(bytes.TrimSpace(rest)) != 0 {
			t.Fatalf("accepted, but CertPEM %q is not the leaf alone", m.CertPEM)
		}
		if strings.HasPrefix(m.ChainPEM, "\n") || !bytes.Equal(m.PrivateKeyPEM, key) {
			t.Fatalf("accepted chain %q", m.ChainPEM)
		}
	})
}
