package relay

import "net"

// SetResolver makes s resolve names with r (tests: a resolver whose
// server never answers). Call it before Serve.
func SetResolver(s *Server, r *net.Resolver) { s.setResolver(r) }
