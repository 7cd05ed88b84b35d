//go:build linux

package pathmgr

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeEvent feeds arbitrary messages to the event decoder: it must
// never panic, keep the type it was given, and whatever it decodes must
// format and encode as valid JSON. The seed corpus is the kernel's encoding
// of every event type (eventCases).
//
//	go test -run '^$' -fuzz '^FuzzDecodeEvent$' -fuzztime 30s ./pathmgr
func FuzzDecodeEvent(f *testing.F) {
	for _, tc := range eventCases() {
		f.Add(uint8(tc.e.Type), kernelEvent(f, tc.e, tc.attrs...))
	}
	f.Add(uint8(0), []byte{})
	f.Add(uint8(eventSubClosed), []byte{4, 0, 0, 0})
	f.Fuzz(func(t *testing.T, cmd uint8, data []byte) {
		e, err := decodeEvent(cmd, data)
		if e.Type != EventType(cmd) {
			t.Fatalf("decoded type %d from command %d", e.Type, cmd)
		}
		_ = e.String()
		b, jerr := json.Marshal(e)
		if jerr != nil || !json.Valid(b) {
			t.Fatalf("JSON of %#v: %s, %v", e, b, jerr)
		}
		if err == nil && e.Token != 0 && !e.Has(AttrToken) {
			t.Fatalf("token %d decoded but not reported present", e.Token)
		}
	})
}

// FuzzDecodeDatagram feeds arbitrary datagrams to the framing decoder: it
// must never panic, and it returns no more events than the datagram has
// room for.
//
//	go test -run '^$' -fuzz '^FuzzDecodeDatagram$' -fuzztime 30s ./pathmgr
func FuzzDecodeDatagram(f *testing.F) {
	for _, tc := range eventCases() {
		f.Add(nlFrame(0x1d, uint8(tc.e.Type), kernelEvent(f, tc.e, tc.attrs...)))
	}
	f.Add([]byte{})
	f.Add(nlFrame(nlmsgError, 0, nil))
	f.Fuzz(func(t *testing.T, dg []byte) {
		evs, _ := decodeDatagram(dg, 0x1d, nil)
		if len(evs) > len(dg)/(nlmsgHdrLen+genlHdrLen) {
			t.Fatalf("%d events from %d bytes", len(evs), len(dg))
		}
	})
}
