"""The backends: one contract (``contract.Backend``), implemented in-process (``local.Wanlora``) and over
HTTP (``remote.RemoteWanlora``), and ``open_backend``, which chooses between them from the settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry.backends.contract import Backend

if TYPE_CHECKING:
    from registry.settings import Settings

__all__ = ["Backend", "open_backend"]


def open_backend(settings: Settings) -> Backend:
    """A team server's when ``settings.server`` is set, else the embedded database and store. With a
    token, the embedded backend obeys that token's role too, exactly as the server would. The caller
    closes it."""
    if settings.server:  # each implementation is imported when chosen: the remote one alone loads httpx
        from registry.backends.remote import RemoteWanlora

        remote: Backend = RemoteWanlora(settings.server, settings.token, default_project=settings.project)
        return remote
    from registry.backends.local import Wanlora

    local = Wanlora.from_settings(settings)
    if settings.token:
        try:
            with local.accounts(write=False) as accounts:
                local = local.as_principal(accounts.authenticate(settings.token))
        except BaseException:
            local.close()
            raise
    backend: Backend = local  # mypy proves here, and above, that both implementations are a Backend
    return backend
