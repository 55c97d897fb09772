"""The defaults that a part of e6auth and a setting share: argon2 and its hash gate, the
brute-force throttle, OIDC bearer tokens.

One definition each, in a module that imports nothing: the settings declare them without loading
the parts they configure (argon2, the throttle's tables, the JWT verifier), which a command that
only reads settings never runs. Each part re-exports its own (``e6auth.verify.throttle.
DEFAULT_USER_FAILURES``), where its readers look for them.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_ADDRESS_BLOCK_SECONDS",
    "DEFAULT_ADDRESS_FAILURES",
    "DEFAULT_ADDRESS_WINDOW_SECONDS",
    "DEFAULT_ALGORITHMS",
    "DEFAULT_CLEAN_AFTER_SECONDS",
    "DEFAULT_FETCH_TIMEOUT_SECONDS",
    "DEFAULT_FIRST_DELAY_SECONDS",
    "DEFAULT_JWKS_CACHE_SECONDS",
    "DEFAULT_LEEWAY_SECONDS",
    "DEFAULT_MAX_TRACKED",
    "DEFAULT_MAX_WAITING",
    "DEFAULT_MAX_WAIT_SECONDS",
    "DEFAULT_MEMORY_KIB",
    "DEFAULT_PARALLELISM",
    "DEFAULT_REFETCH_COOLDOWN_SECONDS",
    "DEFAULT_TIME_COST",
    "DEFAULT_USERNAME_CLAIM",
    "DEFAULT_USER_FAILURES",
    "DEFAULT_USER_MAX_DELAY_SECONDS",
    "DEFAULT_USER_WINDOW_SECONDS",
]

# -- argon2id (e6auth.credentials.passwords) and its gate (e6auth.credentials.hashgate) ---------

# OWASP's minimum recommendation for argon2id: 19 MiB, two passes, one lane.
DEFAULT_MEMORY_KIB = 19 * 1024
DEFAULT_TIME_COST = 2
DEFAULT_PARALLELISM = 1

DEFAULT_MAX_WAITING = 256
DEFAULT_MAX_WAIT_SECONDS = 5.0

# -- the brute-force throttle (e6auth.verify.throttle) -------------------------------------------

# GitLab bans an address after 30 failed logins in 3 minutes.
DEFAULT_ADDRESS_FAILURES = 30
DEFAULT_ADDRESS_WINDOW_SECONDS = 180.0
DEFAULT_ADDRESS_BLOCK_SECONDS = 600.0
# Per name: 10 free failures (GitLab locks an account after 10), then 1, 2, 4 ... 300 s between
# attempts from addresses that failed. A guesser keeping a name slowed down gets one guess per
# 5 minutes; stopping for the 15-minute window to get 10 free ones again, about one a minute.
DEFAULT_USER_FAILURES = 10
DEFAULT_USER_WINDOW_SECONDS = 900.0
DEFAULT_USER_MAX_DELAY_SECONDS = 300.0
DEFAULT_FIRST_DELAY_SECONDS = 1.0
# An address that failed once is off the exemption for a day: rotating addresses then buys a
# guesser one guess per address (IPv6: per /48) per day and name.
DEFAULT_CLEAN_AFTER_SECONDS = 86_400.0
DEFAULT_MAX_TRACKED = 100_000

# -- OIDC bearer tokens (e6auth.verify.oidc) -----------------------------------------------------

DEFAULT_ALGORITHMS: tuple[str, ...] = ("RS256", "ES256")
DEFAULT_USERNAME_CLAIM = "sub"
"""``sub`` is in every access token (RFC 9068; for client credentials it names the client) and
is the issuer's stable name for the subject. ``email`` may be absent, unverified or reassigned:
choose it (``oidc_username_claim``) when the issuer is trusted to vouch for e-mail addresses."""
DEFAULT_LEEWAY_SECONDS = 30.0
DEFAULT_JWKS_CACHE_SECONDS = 300.0
DEFAULT_REFETCH_COOLDOWN_SECONDS = 30.0
DEFAULT_FETCH_TIMEOUT_SECONDS = 5.0
