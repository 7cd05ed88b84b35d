package reuse

import "testing"

func TestKeep(t *testing.T) {
	for _, c := range []struct {
		len, cap int
		kept     bool
	}{
		{0, 0, true},
		{0, 1024, true},     // small buffers stay
		{0, 1025, false},    // an empty read of a big buffer lets it go
		{1000, 3024, true},  // exactly twice plus the slack
		{1000, 3025, false}, // one more
		{50000, 65536, true},
		{10000, 65536, false}, // 40,000 of 50,000 gone
	} {
		buf := make([]uint32, c.len, c.cap)
		got := Keep(buf)
		if (got != nil) != c.kept {
			t.Errorf("len %d cap %d: kept %v, want %v", c.len, c.cap, got != nil, c.kept)
		}
		if got != nil && (len(got) != c.len || cap(got) != c.cap) {
			t.Errorf("len %d cap %d: kept as len %d cap %d", c.len, c.cap, len(got), cap(got))
		}
	}
}
