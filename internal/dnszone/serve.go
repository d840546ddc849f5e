package dnszone

import (
	"errors"
	"fmt"
	"net"

	"github.com/miekg/dns"
)

// Server serves a zone on UDP and TCP of one loopback port.
type Server struct {
	// Addr is the host:port both listen on.
	Addr    string
	servers []*dns.Server
}

// ListenPair listens on UDP and TCP of one port of addr, as a DNS server
// does ("127.0.0.1:0" picks a port free for both: a port free for UDP may
// be taken for TCP, so it tries others).
func ListenPair(addr string) (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("listen dns udp %s: %w", addr, err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		_ = pc.Close()
		lastErr = fmt.Errorf("listen dns tcp %s: %w", pc.LocalAddr(), err)
	}
	return nil, nil, lastErr
}

// Listen serves z on addr ("127.0.0.1:0" picks a port free for both UDP
// and TCP, ListenPair).
func Listen(z *Zone, addr string) (*Server, error) {
	pc, ln, err := ListenPair(addr)
	if err != nil {
		return nil, err
	}
	bound := pc.LocalAddr().String()
	s := &Server{Addr: bound}
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Handler: z, TsigSecret: z.TsigSecret(), MsgAcceptFunc: Accept},
		{Listener: ln, Handler: z, TsigSecret: z.TsigSecret(), MsgAcceptFunc: Accept},
	} {
		started := make(chan struct{})
		failed := make(chan error, 1)
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { failed <- srv.ActivateAndServe() }()
		select {
		case <-started:
			s.servers = append(s.servers, srv)
		case err := <-failed:
			_ = s.Close()
			_ = pc.Close()
			_ = ln.Close()
			return nil, fmt.Errorf("serve dns %s: %w", bound, err)
		}
	}
	return s, nil
}

// Close stops serving.
func (s *Server) Close() error {
	var errs []error
	for _, srv := range s.servers {
		errs = append(errs, srv.Shutdown())
	}
	return errors.Join(errs...)
}

// Accept is the dns.Server MsgAcceptFunc of a server carrying a zone: the
// default refuses UPDATE as not implemented.
func Accept(dh dns.Header) dns.MsgAcceptAction {
	if int(dh.Bits>>11)&0xF == dns.OpcodeUpdate {
		return dns.MsgAccept
	}
	return dns.DefaultMsgAcceptFunc(dh)
}
