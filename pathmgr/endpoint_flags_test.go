//go:build linux

package pathmgr

import (
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/genetlink/genltest"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// fakeKernelPM is an in-kernel PM endpoint table that keeps only the flag
// bits in keep, as kernels do with flags they predate.
type fakeKernelPM struct {
	mu     sync.Mutex
	keep   EndpointFlags
	eps    map[uint8]Endpoint
	nextID uint8
}

func (k *fakeKernelPM) serve(t *testing.T) genltest.Func {
	return func(greq genetlink.Message, nreq netlink.Message) ([]genetlink.Message, error) {
		if nreq.Header.Type == 0 {
			return nil, nil
		}
		k.mu.Lock()
		defer k.mu.Unlock()
		var req Endpoint
		ad, err := netlink.NewAttributeDecoder(greq.Data)
		if err != nil {
			t.Fatal(err)
		}
		for ad.Next() {
			if ad.Type() == attrAddr {
				ad.Nested(func(nad *netlink.AttributeDecoder) error {
					req, err = decodeAddr(nad)
					return err
				})
			}
		}
		reply := func(e Endpoint) genetlink.Message {
			var ae attrEncoder
			encodeAddr(&ae, attrAddr, e)
			return genetlink.Message{Header: genetlink.Header{Command: cmdGetAddr}, Data: ae.b}
		}
		switch greq.Header.Command {
		case cmdAddAddr:
			if req.ID == 0 {
				k.nextID++
				req.ID = k.nextID
			}
			req.Flags &= k.keep
			k.eps[req.ID] = req
			return nil, nil
		case cmdGetAddr:
			if nreq.Header.Flags&netlink.Dump != 0 {
				var msgs []genetlink.Message
				for _, e := range k.eps {
					msgs = append(msgs, reply(e))
				}
				return msgs, nil
			}
			e, ok := k.eps[req.ID]
			if !ok {
				return nil, genltest.Error(int(unix.EINVAL))
			}
			return []genetlink.Message{reply(e)}, nil
		case cmdDelAddr:
			if _, ok := k.eps[req.ID]; !ok {
				return nil, genltest.Error(int(unix.EINVAL))
			}
			delete(k.eps, req.ID)
			return nil, nil
		}
		return nil, genltest.Error(int(unix.EOPNOTSUPP))
	}
}

// A kernel older than a requested flag drops it silently; AddEndpoint
// notices, removes the endpoint again and says which flag needs which Linux.
func TestAddEndpointDroppedFlag(t *testing.T) {
	for _, tc := range []struct {
		name string
		e    Endpoint
	}{
		{"by id", Endpoint{ID: 5, Addr: netip.MustParseAddr("10.4.0.1"), Flags: FlagSubflow | FlagLaminar}},
		{"by address", Endpoint{Addr: netip.MustParseAddr("fd00::4"), Port: 8080, Flags: FlagSignal | FlagLaminar}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := &fakeKernelPM{keep: FlagSignal | FlagSubflow | FlagBackup | FlagFullmesh, eps: map[uint8]Endpoint{}}
			// An unrelated endpoint with the same address but another port
			// must not be taken for (or removed instead of) the new one.
			old.eps[9] = Endpoint{ID: 9, Addr: tc.e.Addr, Port: 9999, Flags: FlagSignal}
			old.nextID = 9
			c := fakeClient(t, old.serve(t))
			err := c.AddEndpoint(tc.e)
			if err == nil || !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), `"laminar" (needs Linux 6.18+)`) {
				t.Fatalf("AddEndpoint = %v, want ErrNotSupported naming laminar and Linux 6.18", err)
			}
			if len(old.eps) != 1 || old.eps[9].Port != 9999 {
				t.Errorf("endpoints left = %+v, want only the unrelated id 9", old.eps)
			}

			cur := &fakeKernelPM{keep: ^EndpointFlags(0), eps: map[uint8]Endpoint{}}
			c = fakeClient(t, cur.serve(t))
			if err := c.AddEndpoint(tc.e); err != nil {
				t.Fatalf("kernel keeping laminar: AddEndpoint = %v", err)
			}
			if len(cur.eps) != 1 {
				t.Errorf("endpoints = %+v, want the one added", cur.eps)
			}
		})
	}
}
