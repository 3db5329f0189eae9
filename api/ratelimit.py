"""Failed sign-ins are rate-limited per client address and per token prefix (a moving window, per
server process, with the `limits` library). Only failures count: a team's own traffic is never slowed,
and a token checked moments ago is answered from the auth cache before this is consulted."""

from __future__ import annotations

import time

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from registry.domain.errors import WanloraError

__all__ = ["SignInLimiter", "TooManyFailures"]

PREFIX_CHARS = 12  # "wlt_" and the first 8 random characters: what a guesser keeps fixed


class TooManyFailures(WanloraError):
    code = "too_many_failures"

    def __init__(self, message: str, *, hint: str | None = None, retry_after: int = 60) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class SignInLimiter:
    def __init__(self, per_address: int = 30, per_prefix: int = 10) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._address = RateLimitItemPerMinute(per_address)
        self._prefix = RateLimitItemPerMinute(per_prefix)

    @staticmethod
    def _prefix_of(token: str | None) -> str:
        return (token or "")[:PREFIX_CHARS] or "<none>"

    def check(self, address: str, token: str | None) -> None:
        """Raise TooManyFailures while the address or the token's prefix is over its limit."""
        for item, key, what in (
            (self._address, address, f"client {address}"),
            (self._prefix, self._prefix_of(token), "tokens starting like this one"),
        ):
            if not self._limiter.test(item, "sign-in", key):
                reset, _ = self._limiter.get_window_stats(item, "sign-in", key)
                wait = max(1, int(reset - time.time()) + 1)
                raise TooManyFailures(
                    f"too many failed sign-ins from {what}; try again in {wait} s",
                    hint="check the token (`wanlora token list` shows which are valid)",
                    retry_after=wait,
                )

    def failed(self, address: str, token: str | None) -> None:
        """Count a presented token that was not valid (a missing token is not a guess)."""
        if not token:
            return
        self._limiter.hit(self._address, "sign-in", address)
        self._limiter.hit(self._prefix, "sign-in", self._prefix_of(token))
