"""``CollabProvisioner``: a kernel provisioner that launches the notebook's sidecar beside it,
delegating the kernel to an inner provisioner (docs/architecture.md, "Processes", "Lifecycle").
"""

from __future__ import annotations

import functools
import importlib
import os
from pathlib import Path
from typing import Any

import anyio
from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.factory import KernelProvisionerFactory
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from traitlets import Bool, Dict, Float, List, Unicode

from .. import hostpatches
from .notebook_path import NotebookPathError, find_notebook
from .sidecars import REGISTRY, SidecarError, SidecarHandle


def _locate(env: Any, cwd: str | None, root_dir: str) -> tuple[Path, Path | None]:
    root = Path(root_dir).resolve()
    return root, find_notebook(env, cwd, root)


@functools.cache
def _load_class(name: str) -> type[KernelProvisionerBase]:
    """An entry point name of jupyter_client.kernel_provisioners, or ``module:Class`` (looked
    up once per server: each lookup read every installed package's entry points, ~5 ms of the
    server's event loop at every kernel start)."""
    if ":" in name:
        module, _, attr = name.partition(":")
        cls = getattr(importlib.import_module(module), attr)
    else:
        factory = KernelProvisionerFactory.instance()
        cls = factory._get_provisioner(name).load()
    if not (isinstance(cls, type) and issubclass(cls, KernelProvisionerBase)):
        raise TypeError(f"{name} is not a kernel provisioner class")
    return cls


class CollabProvisioner(KernelProvisionerBase):
    """Launches a kernel through an inner provisioner, plus its notebook's sidecar."""

    inner_provisioner = Unicode(
        "local-provisioner",
        help="The provisioner that launches the kernel itself: an entry point name of group "
        "jupyter_client.kernel_provisioners, or 'module:Class'.",
    ).tag(config=True)
    inner_config = Dict(help="Configuration passed to the inner provisioner.").tag(config=True)
    sidecar_args = List(
        Unicode(), help="Extra command-line options for the sidecar (see its --help)."
    ).tag(config=True)
    sidecar_start_timeout = Float(30.0, help="Seconds to wait for the sidecar.").tag(config=True)
    fork_sidecars = Bool(
        True,
        help="Fork each sidecar from one process per server that has imported what sidecars "
        "need (Linux), so notebooks share those pages and a sidecar starts at once; off: "
        "each sidecar is a new interpreter (for example while changing kernel_collab's code).",
    ).tag(config=True)

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.inner: KernelProvisionerBase = _load_class(self.inner_provisioner)(
            kernel_id=self.kernel_id,
            kernel_spec=self.kernel_spec,
            parent=self.parent,
            **self.inner_config,
        )
        self.notebook: Path | None = None
        self.root: Path | None = None
        self.sidecar: SidecarHandle | None = None
        self._reported_exit: int | None = None

    # -- Popen-like delegation (and the timing methods at the end): the inner provisioner's ---

    @property
    def has_process(self) -> bool:
        return bool(self.inner.has_process)

    async def poll(self) -> int | None:
        """The kernel's status only; a dead sidecar is restarted here, out of the kernel's way."""
        status = await self.inner.poll()
        if status is None:
            self._reported_exit = None
            await self._supervise()
        elif (
            self._reported_exit is None
            and not getattr(self.parent, "shutting_down", False)  # asked for: not a death
            and self.sidecar is not None
            and self.sidecar.alive
        ):
            self._reported_exit = status  # tell the document once per death
            await self._detach(self.sidecar, "dead")
        return status

    async def wait(self) -> int | None:
        return await self.inner.wait()

    async def send_signal(self, signum: int) -> None:
        await self.inner.send_signal(signum)

    async def kill(self, restart: bool = False) -> None:
        await self.inner.kill(restart=restart)

    async def terminate(self, restart: bool = False) -> None:
        await self.inner.terminate(restart=restart)

    async def shutdown_requested(self, restart: bool = False) -> None:
        await self.inner.shutdown_requested(restart=restart)

    # -- launch ------------------------------------------------------------------------------

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Find the session's notebook, then let the inner provisioner prepare the kernel."""
        env = kwargs.get("env") or os.environ
        manager = getattr(self.parent, "parent", None)
        root_dir = getattr(manager, "root_dir", None) or os.getcwd()
        try:
            self.root, self.notebook = await anyio.to_thread.run_sync(
                _locate, env, kwargs.get("cwd"), root_dir
            )
        except NotebookPathError as exc:
            raise RuntimeError(f"kernel_collab: {exc}") from None
        if self.notebook is not None:
            existing = REGISTRY.get(self.notebook)
            try:
                if existing is not None:  # refused before a kernel process exists
                    self._check_one_kernel(existing)
                    REGISTRY.kernel_starting(existing, str(self.kernel_id))
                else:  # the document is served first, the kernel starts beside it
                    await self._ensure_sidecar(starting=True)
            except SidecarError as exc:
                raise RuntimeError(f"kernel_collab: {exc}") from None
        try:
            return await self.inner.pre_launch(**kwargs)
        except Exception as exc:
            await self._start_failed(exc)
            raise

    async def _ensure_sidecar(self, *, starting: bool = False) -> SidecarHandle:
        """The notebook's sidecar, started if none runs (``starting``: for this kernel,
        which it shows as starting until attached)."""
        assert self.notebook is not None and self.root is not None
        args = [*self.sidecar_args, "--kernel-starting"] if starting else list(self.sidecar_args)
        return await REGISTRY.ensure(
            self.notebook, self.root, args, self.sidecar_start_timeout, self.fork_sidecars,
            str(self.kernel_id) if starting else None,
        )  # fmt: skip

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        try:
            info = await self.inner.launch_kernel(cmd, **kwargs)
        except Exception as exc:
            await self._start_failed(exc)
            raise
        self.connection_info = info
        return info

    async def _start_failed(self, error: Exception) -> None:
        """The kernel could not be launched: its room, served meanwhile, stops showing it as
        starting and says why (runs queued for it are cancelled)."""
        sidecar = REGISTRY.get(self.notebook) if self.notebook is not None else None
        if sidecar is not None and sidecar.is_starting(str(self.kernel_id)):
            # Logged first: the operator's log is never behind what the room shows.
            self.log.error("kernel_collab: kernel %s for %s did not start: %s", self.kernel_id,
                           self.notebook, error)  # fmt: skip
            await sidecar.kernel_failed(error, str(self.kernel_id))

    async def post_launch(self, **kwargs: Any) -> None:
        """Start (or find) the sidecar and attach it to this kernel's new connection info."""
        await self.inner.post_launch(**kwargs)
        if self.notebook is None:
            self.log.info("kernel_collab: kernel %s has no notebook: no sidecar", self.kernel_id)
            return
        await self._attach_sidecar()

    async def _attach_sidecar(self) -> None:
        assert self.notebook is not None and self.root is not None
        try:
            sidecar = await self._ensure_sidecar()
            self._check_one_kernel(sidecar)
            info = {
                k: (v.decode() if isinstance(v, bytes) else v)
                for k, v in dict(self.connection_info).items()
            }
            reply = await sidecar.request(
                {"type": "attach_kernel", "kernel_id": self.kernel_id, "connection_info": info}
            )
            sidecar.document_id = reply.get("document_id")
        except SidecarError as exc:
            await self.inner.kill()
            await self.inner.cleanup(restart=False)
            await self._start_failed(exc)
            raise RuntimeError(f"kernel_collab: {exc}") from None
        self.sidecar = sidecar  # only now: a refused kernel must never detach the room's one
        sidecar.kernel_ids.add(str(self.kernel_id))
        if sidecar.starting_kernel == str(self.kernel_id):
            sidecar.starting_kernel = None

    def _check_one_kernel(self, sidecar: SidecarHandle) -> None:
        """Refuse a second kernel for the notebook, attached or still launching."""
        others = (sidecar.kernel_ids | self._launching(sidecar)) - {str(self.kernel_id)}
        if others:
            raise SidecarError(
                f"{sidecar.notebook.name} already has a collaborative kernel "
                f"({', '.join(sorted(others))}); one notebook has one kernel: use that "
                "kernel (\"use kernel from another session\") or shut it down first"
            )

    def _launching(self, sidecar: SidecarHandle) -> set[str]:
        """The kernel being launched for the notebook, if its start is still under way in the
        kernel manager (one that ended without telling the room, cancelled, is none)."""
        starting = sidecar.starting_kernel
        manager = getattr(self.parent, "parent", None)
        if starting is None or not hostpatches.start_under_way(manager, starting):
            return set()
        return {starting}

    async def _supervise(self) -> None:
        sidecar = self.sidecar
        if sidecar is None or sidecar.alive or self.notebook is None:
            return
        self.log.warning(
            "kernel_collab: sidecar for %s (kernel %s) died with %s; starting a new one "
            "from the store", self.notebook, self.kernel_id, sidecar.process.returncode,
        )  # fmt: skip
        REGISTRY.forget(sidecar)
        self.notebook = sidecar.notebook  # it may have been renamed since launch
        try:
            await self._attach_sidecar()
        except RuntimeError as exc:
            self.log.error("kernel_collab: could not restart the sidecar: %s", exc)

    async def cleanup(self, restart: bool = False) -> None:
        """Tell the sidecar the kernel is restarting or gone, then clean the kernel up."""
        sidecar = self.sidecar
        if sidecar is not None and sidecar.alive:
            await self._detach(sidecar, "restart" if restart else "shutdown")
            if not restart:
                sidecar.kernel_ids.discard(str(self.kernel_id))
        await self.inner.cleanup(restart=restart)

    async def _detach(self, sidecar: SidecarHandle, reason: str) -> None:
        try:
            await sidecar.request({"type": "detach_kernel", "reason": reason})
        except SidecarError as exc:
            self.log.warning("kernel_collab: %s", exc)

    async def get_provisioner_info(self) -> dict[str, Any]:
        """Persistable info: the inner provisioner's plus the notebook path."""
        info = await self.inner.get_provisioner_info()
        info["kernel_collab_notebook"] = str(self.notebook) if self.notebook else None
        return dict(info)

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        """Inverse of :meth:`get_provisioner_info`."""
        await self.inner.load_provisioner_info(provisioner_info)
        notebook = provisioner_info.get("kernel_collab_notebook")
        self.notebook = Path(notebook) if notebook else None

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        return float(self.inner.get_shutdown_wait_time(recommended))

    def get_stable_start_time(self, recommended: float = 10.0) -> float:
        return float(self.inner.get_stable_start_time(recommended))

    def resolve_path(self, path: str) -> str | None:
        resolved: str | None = self.inner.resolve_path(path)
        return resolved
