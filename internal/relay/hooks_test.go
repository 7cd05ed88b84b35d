package relay

import "net"

// SetResolver makes s resolve names with r (tests: a resolver whose
// server never answers). Call it before Serve.
func SetResolver(s *Server, r *net.Resolver) { s.setResolver(r) }

// DropIdlePipes closes the splice pipes kept for reuse, which are not a
// leak but count as fds.
func DropIdlePipes() { dropIdlePipes() }
