"""The verification pipeline: the :class:`~e6auth.verify.authenticator.Authenticator` in front,
its cache, sessions, OIDC bearer tokens, the brute-force throttle, per-token restrictions, the
token policy, and the :class:`~e6auth.verify.principal.Principal` a verified credential yields."""
