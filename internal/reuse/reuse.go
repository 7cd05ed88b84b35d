// Package reuse holds the one rule by which the daemon keeps a buffer it
// refills again and again (a read of the telemetry map, a resync sweep's
// token list): keep it while what filled it last still used about half of
// it or more.
package reuse

// slack is how many elements above twice its contents a kept buffer may
// hold: small buffers are always kept.
const slack = 1024

// Keep returns buf to be refilled next time, or nil when its capacity is
// more than twice its length plus 1,024 elements. A buffer sized by a peak
// (most of the connections or subflows that filled it have gone since)
// would otherwise hold the peak's memory for the daemon's life.
func Keep[S ~[]E, E any](buf S) S {
	if cap(buf) > 2*len(buf)+slack {
		return nil
	}
	return buf
}
