package mptcpify

// PutPIDStart sets pid's entry with start time start, as a recycled pid
// would leave it.
func (m *Mptcpify) PutPIDStart(pid int, start uint64) error {
	return m.pids.Put(uint32(pid), start)
}

// StartTicks exposes startTicks.
var StartTicks = startTicks
