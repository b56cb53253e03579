"""A test identity provider and authorizer: one token per role (reader, editor, runner)."""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.authorizer import Authorizer
from jupyter_server.auth.identity import IdentityProvider, User

TOKENS = {"reader-token": "reader", "editor-token": "editor", "runner-token": "runner",
          "runner2-token": "runner2", "runner3-token": "runner3"}


class RoleIdentityProvider(IdentityProvider):
    """Authenticates ``Authorization: token <role>-token`` or ``?token=<role>-token``."""

    def get_user(self, handler: Any) -> User | None:
        """The user of a request's token, if it is one of ours."""
        auth = handler.request.headers.get("Authorization", "")
        token = auth.split(" ", 1)[1] if auth.lower().startswith("token ") else None
        token = token or handler.get_argument("token", None)
        role = TOKENS.get(token or "")
        if role is None:
            return None
        handler._token_authenticated = True  # as Jupyter's own provider does: no XSRF check
        return User(username=role, name=role.title(), display_name=role.title(),
                    initials=role[0].upper(), color="var(--jp-collaborator-color1)")


class RoleAuthorizer(Authorizer):
    """reader: read; editor: read, write contents and kernels (which jupyter_server's own
    interrupt and restart routes ask for), never execute; runner: everything."""

    def is_authorized(self, handler: Any, user: User, action: str, resource: str) -> bool:
        """Whether the user's role allows ``action`` on ``resource``."""
        if user.username.startswith("runner"):
            return True
        if action == "read":
            return True
        return (user.username == "editor" and action == "write"
                and resource in ("contents", "kernels"))  # fmt: skip


#: Roles of the people of ``tests.browser.identity``, for browser tests: Alice runs, Bob edits
#: (may not run), Carol reads.
PEOPLE_ROLES = {"alice": "runner", "bob": "editor", "carol": "reader"}


class PeopleRoleAuthorizer(RoleAuthorizer):
    """:class:`RoleAuthorizer` for the named people of the browser tests (``PEOPLE_ROLES``);
    anyone else (the server's token alone) is held to the rules of their own username."""

    def is_authorized(self, handler: Any, user: User, action: str, resource: str) -> bool:
        """Whether the person's role allows ``action`` on ``resource``."""
        role = User(username=PEOPLE_ROLES.get(user.username, user.username))
        return super().is_authorized(handler, role, action, resource)
