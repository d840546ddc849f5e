package guard

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
)

// An error a tenant reads shows the target, not the operator's network:
// the resolver a lookup asked, a connection's local end and the addresses
// the caller names (its recursive resolvers) are left out.
func TestTenantError(t *testing.T) {
	local := &net.TCPAddr{IP: net.ParseIP("10.0.0.5"), Port: 34567}
	remote := &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 443}
	for _, tc := range []struct {
		err    error
		hidden []string
		want   string
	}{
		{fmt.Errorf("post: %w", &net.DNSError{Err: "no such host", Name: "hooks.example", Server: "10.255.255.53:53", IsNotFound: true}),
			nil, "post: lookup hooks.example: no such host"},
		{&net.OpError{Op: "read", Net: "tcp", Source: local, Addr: remote, Err: errors.New("connection reset by peer")},
			nil, "read tcp 192.0.2.7:443: connection reset by peer"},
		{&net.OpError{Op: "dial", Net: "tcp", Addr: remote, Err: errors.New("connection refused")},
			nil, "dial tcp 192.0.2.7:443: connection refused"},
		// lego names the recursive resolver it asked in its own words.
		{fmt.Errorf("initial recursive nameserver: DNS call error: %w [ns=10.255.255.53:53, question='_acme-challenge.x.example. IN TXT']",
			&net.OpError{Op: "read", Net: "udp", Source: local, Addr: &net.UDPAddr{IP: net.ParseIP("10.255.255.53"), Port: 53}, Err: errors.New("i/o timeout")}),
			[]string{"10.255.255.53:53"},
			"initial recursive nameserver: DNS call error: read udp resolver: i/o timeout [ns=resolver, question='_acme-challenge.x.example. IN TXT']"},
	} {
		if got := TenantError(tc.err, tc.hidden...); got != tc.want {
			t.Errorf("TenantError(%q) = %q, want %q", tc.err, got, tc.want)
		}
		if strings.Contains(TenantError(tc.err, tc.hidden...), "10.") {
			t.Errorf("TenantError(%q) names the operator's network", tc.err)
		}
	}
}

// FuzzTenantError: whatever text surrounds them, an address the caller
// hides and a lookup's resolver never survive in the text a tenant reads,
// and the target's own address does.
func FuzzTenantError(f *testing.F) {
	f.Add("initial recursive nameserver: DNS call error:", "[ns=", ", question='x. IN TXT']", uint16(53))
	f.Add("", "", "", uint16(5353))
	f.Add("10.255.255.53:5", "3", "resolver", uint16(53))
	f.Fuzz(func(t *testing.T, before, between, after string, port uint16) {
		resolver := net.JoinHostPort("10.255.255.53", fmt.Sprint(port))
		target := &net.UDPAddr{IP: net.ParseIP("192.0.2.7"), Port: 53}
		err := fmt.Errorf("%s%w%s%s%s", before, &net.OpError{Op: "read", Net: "udp", Source: &net.UDPAddr{IP: net.ParseIP("10.0.0.5"), Port: 34567},
			Addr: target, Err: &net.DNSError{Err: "i/o timeout", Name: "x.example", Server: resolver, IsTimeout: true}}, between, resolver, after)
		got := TenantError(err, resolver)
		for _, s := range []string{before, between, after} {
			if strings.Contains(s, "10.") || strings.Contains(s, resolver) {
				return // the surrounding text names them itself
			}
		}
		if strings.Contains(got, resolver) || strings.Contains(got, "10.0.0.5:34567") {
			t.Errorf("TenantError(%q) = %q names the operator's address", err, got)
		}
		if !strings.Contains(got, target.String()) {
			t.Errorf("TenantError(%q) = %q lost the target", err, got)
		}
	})
}
