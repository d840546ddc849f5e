package guard

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParseAllow(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		want    []string
		wantErr []string // substrings the error must contain
	}{
		{name: "cidrs", in: []string{"127.0.0.0/8", "::1/128"}, want: []string{"127.0.0.0/8", "::1/128"}},
		{name: "bare ips", in: []string{"10.1.2.3", "fd00::1"}, want: []string{"10.1.2.3/32", "fd00::1/128"}},
		{name: "masked", in: []string{"10.1.2.3/8"}, want: []string{"10.0.0.0/8"}},
		{name: "mapped", in: []string{"::ffff:10.0.0.0/104"}, want: []string{"10.0.0.0/8"}},
		{name: "spaces and empties", in: []string{" 127.0.0.1 ", ""}, want: []string{"127.0.0.1/32"}},
		{name: "bad entries named", in: []string{"127.0.0.0/8", "nope", "10.0.0.0/33"}, wantErr: []string{`"nope"`, `"10.0.0.0/33"`}},
		{name: "zone refused", in: []string{"fe80::1%eth0"}, wantErr: []string{`"fe80::1%eth0"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAllow(tc.in)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("got %v, want an error", got)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("got error %q, want it to name %s", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i].String() != tc.want[i] {
					t.Errorf("entry %d: got %s, want %s", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestCheck(t *testing.T) {
	allowLoop, err := ParseAllow([]string{"127.0.0.0/8", "::1", "10.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	allowMeta, err := ParseAllow([]string{"169.254.169.254"})
	if err != nil {
		t.Fatal(err)
	}
	allowAll, err := ParseAllow([]string{"0.0.0.0/0", "::/0"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ip    string
		allow []netip.Prefix
		want  string // "" = allowed, else the reason
	}{
		{"8.8.8.8", nil, ""},
		{"1.1.1.1", nil, ""},
		{"2606:4700:4700::1111", nil, ""},
		{"::ffff:8.8.8.8", nil, ""},
		{"0.0.0.0", nil, ReasonUnspecified},
		{"::", nil, ReasonUnspecified},
		{"0.0.0.0", allowAll, ReasonUnspecified},
		{"127.0.0.1", nil, ReasonLoopback},
		{"127.8.9.10", nil, ReasonLoopback},
		{"::1", nil, ReasonLoopback},
		{"::ffff:127.0.0.1", nil, ReasonLoopback},
		{"10.1.2.3", nil, ReasonPrivate},
		{"172.16.0.1", nil, ReasonPrivate},
		{"172.31.255.255", nil, ReasonPrivate},
		{"172.32.0.1", nil, ""},
		{"192.168.1.1", nil, ReasonPrivate},
		{"fd12:3456::1", nil, ReasonPrivate},
		{"fc00::1", nil, ReasonPrivate},
		{"169.254.1.1", nil, ReasonLinkLocal},
		{"fe80::1", nil, ReasonLinkLocal},
		{"fe80::1%eth0", nil, ReasonLinkLocal},
		{"100.64.0.1", nil, ReasonCGNAT},
		{"100.127.255.254", nil, ReasonCGNAT},
		{"100.128.0.1", nil, ""},
		{"224.0.0.1", nil, ReasonMulticast},
		{"239.255.255.250", nil, ReasonMulticast},
		{"ff02::1", nil, ReasonMulticast},
		{"255.255.255.255", nil, ReasonBroadcast},
		{"0.1.2.3", nil, ReasonReserved},
		{"240.0.0.1", nil, ReasonReserved},
		{"192.0.0.8", nil, ReasonReserved},
		{"192.0.2.1", nil, ReasonReserved},
		{"198.18.0.1", nil, ReasonReserved},
		{"198.19.255.1", nil, ReasonReserved},
		{"198.51.100.7", nil, ReasonReserved},
		{"203.0.113.9", nil, ReasonReserved},
		{"2001:db8::1", nil, ReasonReserved},
		{"100::1", nil, ReasonReserved},
		{"::1.2.3.4", nil, ReasonReserved},
		{"4000::1", nil, ReasonReserved},
		{"64:ff9b::a00:1", nil, ReasonPrivate},           // NAT64 of 10.0.0.1
		{"64:ff9b::7f00:1", nil, ReasonLoopback},         // NAT64 of 127.0.0.1
		{"64:ff9b::a9fe:a9fe", nil, ReasonCloudMetadata}, // NAT64 of 169.254.169.254
		{"64:ff9b::808:808", nil, ""},                    // NAT64 of 8.8.8.8
		{"2002:c0a8:101::1", nil, ReasonPrivate},         // 6to4 of 192.168.1.1
		{"2002:808:808::1", nil, ""},                     // 6to4 of 8.8.8.8
		{"169.254.169.254", nil, ReasonCloudMetadata},
		{"::ffff:169.254.169.254", nil, ReasonCloudMetadata},
		{"fd00:ec2::254", nil, ReasonCloudMetadata},
		{"100.100.100.200", nil, ReasonCloudMetadata},
		{"168.63.129.16", nil, ReasonCloudMetadata},      // Azure WireServer: public space, not a special range
		{"168.63.129.16", allowAll, ReasonCloudMetadata}, // only an exact allow entry opens a metadata address
		{"169.254.169.254", allowAll, ReasonCloudMetadata},
		{"169.254.169.254", allowMeta, ""},
		{"169.254.169.253", allowMeta, ReasonLinkLocal},
		{"127.0.0.1", allowLoop, ""},
		{"127.0.0.2", allowLoop, ""},
		{"::ffff:127.0.0.1", allowLoop, ""},
		{"::1", allowLoop, ""},
		{"10.9.9.9", allowLoop, ""},
		{"64:ff9b::7f00:1", allowLoop, ""},
		{"192.168.1.1", allowLoop, ReasonPrivate},
		{"fe80::1", allowAll, ""},
	}
	for _, tc := range tests {
		name := tc.ip
		if tc.allow != nil {
			name += " allow " + tc.allow[0].String()
		}
		t.Run(name, func(t *testing.T) {
			err := Policy{Allow: tc.allow}.Check(netip.MustParseAddr(tc.ip))
			got := ""
			if err != nil {
				var be *BlockedError
				if !errors.As(err, &be) {
					t.Fatalf("got error %T %v, want *BlockedError", err, err)
				}
				got = be.Reason
			}
			if got != tc.want {
				t.Errorf("got reason %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("invalid", func(t *testing.T) {
		var be *BlockedError
		if err := (Policy{}).Check(netip.Addr{}); !errors.As(err, &be) || be.Reason != ReasonInvalid {
			t.Errorf("got %v, want reason %q", err, ReasonInvalid)
		}
	})
}

func TestDialer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	addr := l.Addr().String()
	loop, err := ParseAllow([]string{"127.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		allow   []netip.Prefix
		network string
		address string
		wantOK  bool
		blocked bool
	}{
		{name: "allowed loopback", allow: loop, network: "tcp", address: addr, wantOK: true},
		{name: "loopback refused", network: "tcp", address: addr, blocked: true},
		{name: "mapped loopback refused", network: "tcp", address: "[::ffff:127.0.0.1]:" + portOf(addr), blocked: true},
		{name: "name refused", allow: loop, network: "tcp", address: "localhost:" + portOf(addr)},
		{name: "udp refused", allow: loop, network: "udp", address: addr},
		{name: "metadata refused", network: "tcp", address: "169.254.169.254:80", blocked: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &Dialer{Policy: Policy{Allow: tc.allow}, Timeout: time.Second}
			c, err := d.DialContext(context.Background(), tc.network, tc.address)
			if c != nil {
				c.Close()
			}
			if (err == nil) != tc.wantOK {
				t.Fatalf("got error %v, want ok=%v", err, tc.wantOK)
			}
			var be *BlockedError
			if got := errors.As(err, &be); got != tc.blocked {
				t.Errorf("got blocked=%v (%v), want %v", got, err, tc.blocked)
			}
		})
	}
}

func TestDialHost(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := portOf(l.Addr().String())
	loop, err := ParseAllow([]string{"127.0.0.0/8", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		allow   []netip.Prefix
		trusted bool
		address string
		want    string // "" = connected, "error" = failed unblocked, else the refusal's reason
	}{
		{name: "loopback refused", address: "127.0.0.1:" + port, want: ReasonLoopback},
		{name: "loopback allowed by policy", allow: loop, address: "127.0.0.1:" + port},
		{name: "name resolving to loopback refused", address: "localhost:" + port, want: ReasonLoopback},
		{name: "name resolving to loopback allowed by policy", allow: loop, address: "localhost:" + port},
		// A refusal comes from the policy check before any socket is made
		// (and from the control hook before connect), so no packet leaves
		// for these; the reason names which rule refused.
		{name: "private refused", address: "10.0.0.1:443", want: ReasonPrivate},
		{name: "metadata refused", address: "169.254.169.254:80", want: ReasonCloudMetadata},
		{name: "numeric name refused", allow: loop, address: "127.1:" + port, want: ReasonInvalid},
		{name: "trusted loopback", trusted: true, address: "127.0.0.1:" + port},
		{name: "trusted name on loopback", trusted: true, address: "localhost:" + port},
		{name: "trusted never reaches metadata", trusted: true, address: "169.254.169.254:80", want: ReasonCloudMetadata},
		{name: "trusted never reaches unspecified", trusted: true, address: "0.0.0.0:" + port, want: ReasonUnspecified},
		{name: "bad port", address: "127.0.0.1:http", want: "error"},
		{name: "no port", address: "127.0.0.1", want: "error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &Dialer{Policy: Policy{Allow: tc.allow}, Timeout: time.Second}
			dial := d.DialHost
			if tc.trusted {
				dial = d.DialTrusted
			}
			c, err := dial(context.Background(), "tcp", tc.address)
			if c != nil {
				c.Close()
			}
			got := ""
			var be *BlockedError
			switch {
			case errors.As(err, &be):
				got = be.Reason
			case err != nil:
				got = "error"
			}
			if got != tc.want {
				t.Errorf("got %q (%v), want %q", got, err, tc.want)
			}
		})
	}
}

// Trust is per call: DialTrusted must not widen what DialHost allows on
// the same dialer afterwards.
func TestDialTrustedLeavesPolicy(t *testing.T) {
	d := &Dialer{Timeout: time.Second}
	if c, err := d.DialTrusted(context.Background(), "tcp", "127.0.0.1:1"); c != nil {
		c.Close()
	} else if errors.As(err, new(*BlockedError)) {
		t.Fatalf("trusted dial refused: %v", err)
	}
	_, err := d.DialHost(context.Background(), "tcp", "127.0.0.1:1")
	var be *BlockedError
	if !errors.As(err, &be) || be.Reason != ReasonLoopback {
		t.Fatalf("got %v, want the loopback refused", err)
	}
	if len(d.Policy.Allow) != 0 {
		t.Errorf("got allow %v after a trusted dial, want none", d.Policy.Allow)
	}
}

// The control hook must refuse what the kernel is asked to connect to even
// when the caller's check was passed, e.g. a dialer used by a resolver-
// based path. Drive it directly: it is the second line of defence.
func TestDialerControl(t *testing.T) {
	for _, tc := range []struct {
		address string
		want    string
	}{
		{"127.0.0.1:443", ReasonLoopback},
		{"[::1]:443", ReasonLoopback},
		{"10.0.0.1:443", ReasonPrivate},
		{"8.8.8.8:443", ""},
		{"garbage", ReasonInvalid},
	} {
		t.Run(tc.address, func(t *testing.T) {
			err := control(Policy{}, tc.address)
			got := ""
			var be *BlockedError
			if errors.As(err, &be) {
				got = be.Reason
			}
			if got != tc.want {
				t.Errorf("got %q (%v), want %q", got, err, tc.want)
			}
		})
	}
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func TestCheckHost(t *testing.T) {
	none := Policy{}
	loop := Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	tests := []struct {
		host   string
		policy Policy
		reason string // "" = allowed
	}{
		{"169.254.169.254", none, ReasonCloudMetadata},
		{"::1", none, ReasonLoopback},
		{"[::1]", none, ReasonLoopback},
		{"::ffff:127.0.0.1", none, ReasonLoopback},
		{"[::ffff:127.0.0.1]", none, ReasonLoopback},
		{"10.0.0.1", none, ReasonPrivate},
		{"[fd00:ec2::254]", none, ReasonCloudMetadata},
		{"0.0.0.0", none, ReasonUnspecified},
		{"[fe80::1%25eth0]", none, ReasonLinkLocal},
		{"127.1", none, ReasonInvalid},
		{"2130706433", none, ReasonInvalid},
		{"0x7f.0x0.0x0.0x1", none, ReasonInvalid},
		{"0177.0.0.1", none, ReasonInvalid},
		{"127.0.0.1.", none, ReasonLoopback},
		{"127.0.0.1", loop, ""},
		{"127.1", loop, ReasonInvalid},
		{"8.8.8.8", none, ""},
		{"hooks.example.com", none, ""},
		{"localhost", none, ""}, // a name: judged by its addresses at send
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			err := tt.policy.CheckHost(tt.host)
			var be *BlockedError
			switch {
			case tt.reason == "" && err != nil:
				t.Fatalf("got %v, want allowed", err)
			case tt.reason != "" && (!errors.As(err, &be) || be.Reason != tt.reason):
				t.Fatalf("got %v, want refused as %s", err, tt.reason)
			}
		})
	}
}
