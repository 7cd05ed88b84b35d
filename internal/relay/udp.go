package relay

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/gigapath/gigapath/internal/relay/socks5"
)

// udpAssociate serves UDP ASSOCIATE (RFC 1928 section 7): a UDP socket on
// the control connection's local address relays datagrams between the
// client and the destinations it names, for as long as the TCP control
// connection stays open. Only datagrams from the client's IP (and from the
// port it announced, when it announced one) are relayed out; only
// datagrams from destinations the client has sent to are relayed back.
func (c *conn) udpAssociate(log *slog.Logger, req socks5.Request) {
	s := c.s
	local := c.c.LocalAddr().(*net.TCPAddr).AddrPort().Addr()
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0)))
	if err != nil {
		c.reply(socks5.GeneralFailure, socks5.Addr{})
		log.Warn("relay udp listen", "err", err)
		return
	}
	defer pc.Close()
	if err := c.reply(socks5.Succeeded, socks5.AddrFromNet(pc.LocalAddr())); err != nil {
		return
	}
	s.m.handshake.Observe(time.Since(c.start).Seconds())
	c.c.SetDeadline(time.Time{})
	// The association lives as long as the control connection.
	ctlDone := make(chan struct{})
	go func() {
		io.Copy(io.Discard, c.c)
		pc.Close()
		close(ctlDone)
	}()
	defer func() { c.c.Close(); <-ctlDone }()

	var client netip.AddrPort // learned from the first datagram if not announced
	if req.Addr.Name == "" && req.Addr.Port != 0 && !req.Addr.IP.IsUnspecified() {
		client = netip.AddrPortFrom(req.Addr.IP, req.Addr.Port)
	}
	wantPort := req.Addr.Port
	contacted := map[netip.AddrPort]struct{}{}
	var mu sync.Mutex // resolver cache
	names := map[string]netip.Addr{}
	buf := make([]byte, 64<<10)
	out := make([]byte, 0, 64<<10+262)
	for {
		if s.cfg.IdleTimeout > 0 {
			pc.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		}
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				log.Info("relay udp end", "err", err)
			}
			return
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if from.Addr() == c.client && (!client.IsValid() || from == client) && (wantPort == 0 || from.Port() == wantPort) {
			client = from
			h, payload, err := socks5.ParseUDP(buf[:n])
			if err != nil || h.Frag != 0 {
				s.m.udp.WithLabelValues("dropped").Inc()
				continue
			}
			ip := h.Addr.IP
			if h.Addr.Name != "" {
				mu.Lock()
				cached, ok := names[h.Addr.Name]
				mu.Unlock()
				if !ok {
					ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DialTimeout)
					ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", h.Addr.Name)
					cancel()
					if err != nil || len(ips) == 0 {
						s.m.udp.WithLabelValues("dropped").Inc()
						continue
					}
					cached = ips[0].Unmap()
					mu.Lock()
					names[h.Addr.Name] = cached
					mu.Unlock()
				}
				ip = cached
			}
			if !s.pol.destAllowed(ip, s.own.contains) {
				s.m.udp.WithLabelValues("dropped").Inc()
				continue
			}
			dst := netip.AddrPortFrom(ip.Unmap(), h.Addr.Port)
			if len(contacted) < 1024 {
				contacted[dst] = struct{}{}
			}
			if _, err := pc.WriteToUDPAddrPort(payload, dst); err == nil {
				s.m.udp.WithLabelValues("up").Inc()
			}
			continue
		}
		if _, ok := contacted[from]; !ok || !client.IsValid() {
			s.m.udp.WithLabelValues("dropped").Inc()
			continue
		}
		out = socks5.AppendUDP(out[:0], socks5.UDPHeader{Addr: socks5.Addr{IP: from.Addr(), Port: from.Port()}}, buf[:n])
		if _, err := pc.WriteToUDPAddrPort(out, client); err == nil {
			s.m.udp.WithLabelValues("down").Inc()
		}
	}
}
