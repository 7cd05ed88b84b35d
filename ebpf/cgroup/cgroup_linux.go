package cgroup

import "golang.org/x/sys/unix"

// isCgroup2 tells whether p is on a cgroup v2 file system.
func isCgroup2(p string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return false, err
	}
	return uint32(st.Type) == uint32(unix.CGROUP2_SUPER_MAGIC), nil
}

// inode is the inode number of path.
func inode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}
