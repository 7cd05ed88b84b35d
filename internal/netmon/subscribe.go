package netmon

import "sync"

// subscriber is one consumer. Its channel has one slot more than buf: the
// reader only sends ordinary events while fewer than buf are queued, so the
// last slot is always free for a Resync and a send never blocks.
type subscriber struct {
	ch      chan Event
	buf     int
	pending bool // a Resync is queued and no event was delivered since
}

// hub fans events out to subscribers without ever blocking the sender.
// Only one goroutine (the Watcher's reader) calls publish.
type hub struct {
	mu     sync.Mutex
	subs   map[*subscriber]bool
	closed bool
}

// subscribe registers a consumer with room for buf events.
func (h *hub) subscribe(buf int) (<-chan Event, func()) {
	if buf < 1 {
		buf = 1
	}
	s := &subscriber{ch: make(chan Event, buf+1), buf: buf}
	h.mu.Lock()
	if h.closed {
		// The Watcher has stopped: nothing will come.
		h.mu.Unlock()
		close(s.ch)
		return s.ch, func() {}
	}
	if h.subs == nil {
		h.subs = map[*subscriber]bool{}
	}
	h.subs[s] = true
	h.mu.Unlock()
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			h.mu.Lock()
			if h.subs[s] {
				delete(h.subs, s)
				close(s.ch)
			}
			h.mu.Unlock()
		})
	}
}

// publish delivers e to every subscriber that has room; a subscriber
// without room gets a single Resync instead.
func (h *hub) publish(e Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if e.Type == Resync {
			if !s.pending {
				s.ch <- e // the reserved slot is free: cannot block
				s.pending = true
			}
			continue
		}
		if len(s.ch) < s.buf {
			s.ch <- e
			s.pending = false
			continue
		}
		if !s.pending {
			s.ch <- Event{Type: Resync}
			s.pending = true
		}
	}
}

// close ends every subscription.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		delete(h.subs, s)
		close(s.ch)
	}
}
