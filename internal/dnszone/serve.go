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

// Listen serves z on addr ("127.0.0.1:0" picks a port free for both UDP
// and TCP).
func Listen(z *Zone, addr string) (*Server, error) {
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen dns udp %s: %w", addr, err)
		}
		bound := pc.LocalAddr().String()
		ln, err := net.Listen("tcp", bound)
		if err != nil {
			_ = pc.Close()
			lastErr = fmt.Errorf("listen dns tcp %s: %w", bound, err)
			continue // the port is taken for TCP: try another
		}
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
	return nil, lastErr
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
