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
