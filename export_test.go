package notify

// WriteCalls returns how many write calls r made to its connections, for
// tests that check a backlog goes out in one call. It is not part of Stats:
// users cannot act on it.
func WriteCalls(r *Registry) uint64 { return r.stats.writes.Load() }
