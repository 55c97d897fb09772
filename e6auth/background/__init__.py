"""Work kept off the request path: the periodic thread, the write-behind buffers (the audit trail,
when each token was last used) and following the invalidation log of other processes."""
