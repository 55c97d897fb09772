"""Work kept off the request path: the periodic thread, one bounded write-behind buffer and its two
users (the audit trail, when each token was last used) and following the invalidation log of other
processes."""
