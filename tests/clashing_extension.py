"""A server extension that also serves ``/api/kernels/{id}/execute`` (as jupyter-server-nbmodel
does): kernel_collab must refuse the clash at start-up, whatever the load order."""

from __future__ import annotations

from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join


class OtherExecuteHandler(APIHandler):
    """Someone else's execute route."""

    def post(self, kernel_id: str) -> None:
        """Claims to execute."""
        self.finish("{}")


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "tests.clashing_extension"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    base = serverapp.web_app.settings["base_url"]
    route = url_path_join(base, r"/api/kernels/(?P<kernel_id>[\w-]+)/execute")
    serverapp.web_app.add_handlers(".*$", [(route, OtherExecuteHandler)])


