package controller

import "slices"

// smallMap is a map of a few entries kept as a slice, in the order the
// keys were first set: a connection's retry timers and peer addresses are
// none, one or two, and a Go map of that size costs a group of eight
// slots (half a KiB for a slot key) where the slice costs its entries; a
// linear search over a few entries is as fast as hashing. The zero value
// (nil) is empty and holds no memory; removing the last entry frees it
// again. Do not delete while ranging over it: use deleteFunc.
type smallMap[K comparable, V any] []smallEntry[K, V]

type smallEntry[K comparable, V any] struct {
	key K
	val V
}

// index is the position of k, -1 when absent.
func (m smallMap[K, V]) index(k K) int {
	return slices.IndexFunc(m, func(e smallEntry[K, V]) bool { return e.key == k })
}

// get returns the value of k and whether it is there.
func (m smallMap[K, V]) get(k K) (V, bool) {
	if i := m.index(k); i >= 0 {
		return m[i].val, true
	}
	var zero V
	return zero, false
}

// at is the value of k, the zero value when absent (like indexing a map).
func (m smallMap[K, V]) at(k K) V {
	v, _ := m.get(k)
	return v
}

// set sets the value of k: in place when k is there, else at the end.
func (m *smallMap[K, V]) set(k K, v V) {
	if i := m.index(k); i >= 0 {
		(*m)[i].val = v
		return
	}
	*m = append(*m, smallEntry[K, V]{k, v})
}

// del removes k, keeping the order of the others.
func (m *smallMap[K, V]) del(k K) {
	m.deleteFunc(func(x K, _ V) bool { return x == k })
}

// deleteFunc removes the entries drop reports, keeping the order of the
// others.
func (m *smallMap[K, V]) deleteFunc(drop func(K, V) bool) {
	// slices.DeleteFunc zeroes the spare capacity: no reference is kept.
	if *m = slices.DeleteFunc(*m, func(e smallEntry[K, V]) bool { return drop(e.key, e.val) }); len(*m) == 0 {
		*m = nil
	}
}
