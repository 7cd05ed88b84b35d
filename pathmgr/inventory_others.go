//go:build !linux

package pathmgr

// Inventory is unavailable outside Linux.
type Inventory struct{}

// OpenInventory returns an error: sock_diag is Linux only.
func OpenInventory(*Config) (*Inventory, error)                  { return nil, errOS }
func (*Inventory) Close() error                                  { return errOS }
func (*Inventory) Connections(ListOptions) ([]Connection, error) { return nil, errOS }

// Connections returns an error: sock_diag is Linux only.
func Connections(*Config, ListOptions) ([]Connection, error) { return nil, errOS }
