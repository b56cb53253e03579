"""A test identity provider with named people: a token per person, remembered in a cookie.

Login: any request carrying one of ``TOKENS`` — ``?token=alice`` in the URL, or the header
``Authorization: token alice`` — is that person, and the response sets Jupyter's usual login
cookie (``username-<host>-<port>``, signed with the server's cookie secret) holding the user.
From then on the browser context (or HTTP client keeping cookies) is that person on every
request: JupyterLab's own calls send the *server's* token (the page config's ``token``) in an
``Authorization`` header together with the cookie, and the server token with a login cookie
means "the person in the cookie" — jupyter_server's default provider does exactly that, and
this one only adds the named tokens in front of it. The server token without a cookie still
works, as an anonymous user, so ``JupyterServer.client()`` keeps working.

Every person is allowed everything (the server's default authorizer).
"""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.identity import IdentityProvider, User

ALICE = User(username="alice", name="Alice", display_name="Alice", initials="A",
             color="#d62728")  # fmt: skip
BOB = User(username="bob", name="Bob", display_name="Bob", initials="B", color="#1f77b4")
CAROL = User(username="carol", name="Carol", display_name="Carol", initials="C",
             color="#2ca02c")  # fmt: skip

#: Login token → person. The token is the username.
TOKENS: dict[str, User] = {user.username: user for user in (ALICE, BOB, CAROL)}

PROVIDER = f"{__name__}.NamedUsersIdentityProvider"
"""The value for ``--ServerApp.identity_provider_class``."""


class NamedUsersIdentityProvider(IdentityProvider):
    """jupyter_server's token-and-cookie provider, plus one login token per person."""

    async def get_user_token(self, handler: Any) -> User | None:
        """The person whose token the request carries, else the default (server token)."""
        person = TOKENS.get(self.get_token(handler) or "")
        if person is not None:
            # ``_get_user`` then sets the login cookie (the person differs from the cookie's)
            # and marks the request token-authenticated, as for the server's token.
            return person
        return await super().get_user_token(handler)
