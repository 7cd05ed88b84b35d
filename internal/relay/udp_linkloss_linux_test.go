//go:build linux

package relay_test

import (
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gigapath/gigapath/internal/relay/socks5"
	"github.com/gigapath/gigapath/internal/testbed"
)

// A chained UDP association whose upstream-facing socket can no longer send
// (the address it sends from went away with its link) ends: the local relay
// closes the client's control connection, so the client associates again
// instead of losing every datagram in silence.
func TestIntegrationUDPChainSourceGone(t *testing.T) {
	bin := gigapathBin(t)
	cli := testbed.NetNST(t, "udpcli")
	up := testbed.NetNST(t, "udpup")
	testbed.ConnectT(t, cli, up, testbed.VethLink{A: "u0", B: "u1", AAddr: "10.78.0.1/24", BAddr: "10.78.0.2/24"})
	start(t, up, bin, "relay", "--listen", "10.78.0.2:1080", "--allow-client", "10.78.0.0/24", "--allow-dest", "10.78.0.0/24")
	waitListen(t, up, "1080")
	start(t, cli, bin, "relay", "--listen", "127.0.0.1:1080", "--upstream", "socks5://10.78.0.2:1080", "--allow-dest", "10.78.0.0/24")
	waitListen(t, cli, "1080")
	// A UDP echo in the upstream's namespace.
	var echo net.PacketConn
	if err := up.Do(func() (err error) { echo, err = net.ListenPacket("udp4", "10.78.0.2:7009"); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	go func() {
		b := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFrom(b)
			if err != nil {
				return
			}
			echo.WriteTo(b[:n], from)
		}
	}()

	var ctl net.Conn
	var uc *net.UDPConn
	err := cli.Do(func() error {
		var err error
		if ctl, err = net.Dial("tcp", "127.0.0.1:1080"); err != nil {
			return err
		}
		ctl.Write(socks5.AppendGreeting(nil, socks5.MethodNoAuth))
		if _, err := io.ReadFull(ctl, make([]byte, 2)); err != nil {
			return err
		}
		ctl.Write(socks5.AppendRequest(nil, socks5.Request{Cmd: socks5.CmdUDPAssociate, Addr: socks5.Addr{IP: netip.IPv4Unspecified()}}))
		rep, bound, err := socks5.ParseReply(ctl)
		if err != nil || rep != socks5.Succeeded {
			return err
		}
		uc, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(bound.IP, bound.Port)))
		return err
	})
	if err != nil || uc == nil {
		t.Fatalf("UDP ASSOCIATE through the chain: %v", err)
	}
	defer ctl.Close()
	defer uc.Close()
	dst := socks5.Addr{IP: netip.MustParseAddr("10.78.0.2"), Port: 7009}
	buf := make([]byte, 2048)
	ok := false
	for i := 0; i < 3 && !ok; i++ {
		uc.Write(socks5.AppendUDP(nil, socks5.UDPHeader{Addr: dst}, []byte("ping")))
		uc.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := uc.Read(buf)
		ok = err == nil && strings.HasSuffix(string(buf[:n]), "ping")
	}
	if !ok {
		t.Fatal("no echo through the chain before the address went away")
	}

	// The address the local relay sends from goes away.
	cli.RunT(t, "ip", "addr", "del", "10.78.0.1/24", "dev", "u0")
	uc.Write(socks5.AppendUDP(nil, socks5.UDPHeader{Addr: dst}, []byte("lost")))
	ctl.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = ctl.Read(buf)
	if err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("control connection after the send failed: %v, want it closed by the local relay", err)
	}
}
