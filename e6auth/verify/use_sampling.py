"""Use sampling: noting that a cached credential was used, without a write per request.

Every accepted token or session call is a use: a restricted token's caller address is checked,
a session's idle clock moves, a token's last use (time and caller address) is recorded for the
audit of new addresses. Doing all of that on every call of a busy connection was most of what
authentication cost the gateway (measured), and within a second it moves the idle clock and the
last-used time by less than their granularity. So a cached credential's use is noted at most
once every :data:`NOTE_EVERY` seconds, and besides on every :data:`SAMPLE_EVERY`-th use, each
time with the caller's address: a stolen bearer token used beside its owner is still seen from
its new address. The authenticator's cache-hit paths decide when (``Authenticator._hit`` and
``cached_call`` read :attr:`UseSampler.noted`); this module notes.
"""

from __future__ import annotations

from dataclasses import dataclass

from e6auth.background.lastused import LastUsedRecorder
from e6auth.verify.principal import Principal
from e6auth.verify.restrictions import Peer, check_peer
from e6auth.verify.session_verifier import require_signer
from e6auth.verify.sessions import TOUCH_GRANULARITY_SECONDS, SessionSigner

__all__ = ["MAX_NOTED", "NOTE_EVERY", "SAMPLE_EVERY", "Noted", "UseSampler"]

NOTE_EVERY = TOUCH_GRANULARITY_SECONDS
"""A cached credential's uses are noted (session touch, last-used record) about this often..."""
SAMPLE_EVERY = 256
"""...and on every this many uses, each time with the caller's address."""
MAX_NOTED = 100_000


@dataclass(slots=True)
class Noted:
    """When a cached credential's use was last noted, and its uses since it was first noted."""

    at: float
    uses: int = 0


class UseSampler:
    """Notes the uses of verified credentials: the restricted token's address check, the
    session's idle clock, the token's last use."""

    def __init__(self, recorder: LastUsedRecorder, signer: SessionSigner | None) -> None:
        self._recorder = recorder
        self._signer = signer
        self.noted: dict[bytes, Noted] = {}
        """When each cached credential's use was last noted, by cache key."""

    def note_use(
        self, key: bytes, principal: Principal, peer: Peer | None, now: float
    ) -> Principal:
        """:meth:`used`, remembering when for the cache-hit path; the caller's address is asked
        for (not left to the last-used recorder's own sampling): noted uses are the sample."""
        noted = self.noted
        entry = noted.get(key)
        if entry is None:
            if len(noted) >= MAX_NOTED:
                noted.clear()  # each credential's next hit notes its use again: harmless
            entry = noted[key] = Noted(now)
        entry.at = now
        # peer_address(peer), without its call: every cache miss notes its use.
        return self.used(principal, peer() if callable(peer) else peer, now)

    def used(self, principal: Principal, peer: Peer | None, now: float) -> Principal:
        """What every accepted token or session call does after verification: the address
        check of a restricted token, the session's idle clock, the token's last use."""
        if principal.allow_from is not None:
            # Only restricted tokens pay for resolving the peer on every call: a session id
            # taken elsewhere must not work from outside the token's ranges either.
            check_peer(principal.allow_from, peer, token_id=principal.token_id)
        if principal.session_id is not None:
            require_signer(self._signer).touch(principal.session_id, now=now)
        if principal.token_id is not None:
            self._recorder.record(principal.token_id, at=now, peer=peer)
        return principal
