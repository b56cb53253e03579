"""A second "host" for the remote-kernel tests, and a Jupyter server that launches kernels there.

The host is a Linux network namespace with its own address on a veth pair (this machine is
``10.231.N.1`` on it, the host ``10.231.N.2``) and its own loopback, running its own sshd: a
kernel started there over SSH cannot reach this machine's ``127.0.0.1`` (nor anything the
Jupyter server or the sidecar listen on), exactly as on another machine. It shares this
machine's filesystem, so the project's ``.venv`` Python runs there as it is.

The kernels go there through gateway-provisioners' ``DistributedProvisioner`` wrapped by
``kernel-collab`` (:func:`write_ssh_kernelspec`). What gateway-provisioners needs, from its
source (0.5):

- paramiko connects with ``RejectPolicy``: the host key must be in ``~/.ssh/known_hosts`` of
  the user running the Jupyter server, and the key is one of ``~/.ssh/id_*`` (no agent here).
  The server gets ``HOME`` set to a folder of the test's holding both, so ``/root/.ssh`` is
  never read nor written;
- the address the kernel's launcher sends its connection info to is ``GP_RESPONSE_IP``, read
  when ``gateway_provisioners.response_manager`` is imported (so: in the server's
  environment), and must be this machine's address on the veth;
- ``KERNEL_USERNAME`` ``root`` is refused unless ``unauthorized_users`` says otherwise;
- only ``KERNEL_ID``, ``KERNEL_USERNAME`` and the kernelspec's ``env`` cross SSH, and the
  launcher starts ``IPKernelApp`` with no arguments: kernel_collab's kernel extension is
  loaded through an IPython profile (``IPYTHONDIR`` in the kernelspec's ``env``).

Everything (sshd, the kernels, the namespace, the veth) is removed at the end, also when a
test fails. When this machine cannot make a network namespace the tests fail saying so: they
are never skipped.
"""

from __future__ import annotations

import getpass
import importlib.util
import itertools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.jupyter_server_process import JupyterServer, running_server

SSHD = "/usr/sbin/sshd"
"""Debian's openssh-server (``scripts/setup-remote`` installs it)."""
SSHD_START_TIMEOUT = 15.0
KERNEL_NAME = "python3-collab-ssh"
"""The kernelspec the remote server offers: ipykernel over SSH, wrapped by kernel-collab."""
EXTENSION_CONFIG = 'c.IPKernelApp.extra_extensions = ["kernel_collab.kernel"]\n'
"""``ipython_kernel_config.py`` of the remote kernel: kernel_collab's extension, loaded by
IPython's configuration (gateway-provisioners' launcher passes ``IPKernelApp`` no arguments)."""

_count = itertools.count(1)


@dataclass
class RemoteHost:
    """A network namespace with its own address and sshd: another host, seen from here."""

    netns: str
    address: str
    """The host's address (inside the namespace)."""
    local_address: str
    """This machine's address on the link to the host: where the host can reach us."""
    user: str
    """Who the test's SSH client logs in as (this process's user)."""
    client_home: Path
    """A ``HOME`` whose ``.ssh`` has the host's key in ``known_hosts`` and the client's key."""
    folder: Path
    sshd: subprocess.Popen[str]
    sshd_log: list[str] = field(default_factory=list)

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a command on the host (in its namespace), capturing its output."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], capture_output=True,
                              text=True, timeout=timeout, check=False)  # fmt: skip

    def pids(self) -> list[int]:
        """Every process on the host now (sshd, its sessions, the kernels launched there)."""
        out = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True,
                             text=True, check=False).stdout  # fmt: skip
        return [int(pid) for pid in out.split()]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)


def _must(what: str, *argv: str) -> None:
    result = _run(*argv)
    if result.returncode != 0:
        pytest.fail(
            f"{what}: `{' '.join(argv)}` failed ({result.returncode}): "
            f"{(result.stderr or result.stdout).strip()}",
            pytrace=False,
        )


def _free_subnet() -> int:
    """A third octet N such that no interface here has an address in ``10.231.N.0/24``."""
    used = _run("ip", "-4", "-o", "addr", "show").stdout
    start = os.getpid() % 254
    for i in range(254):
        n = (start + i) % 254 + 1
        if f" 10.231.{n}." not in used:
            return n
    pytest.fail("no free 10.231.N.0/24 subnet for the remote host's link", pytrace=False)


def _keygen(path: Path, comment: str) -> str:
    """Make an ed25519 key pair without a passphrase; return the public key's line."""
    _must("making an SSH key", "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
          "-f", str(path))  # fmt: skip
    return path.with_name(path.name + ".pub").read_text().strip()


def _sshd_config(folder: Path, address: str, user: str) -> Path:
    config = folder / "sshd_config"
    config.write_text("\n".join([
        f"ListenAddress {address}",
        "Port 22",
        f"HostKey {folder / 'ssh_host_ed25519_key'}",
        f"PidFile {folder / 'sshd.pid'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}",
        f"AllowUsers {user}",
        # Root may log in with the test's key, and only on this sshd (the test runs as root).
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        # The key files are under the test's tmp folder, whose parents (/tmp) anyone may write.
        "StrictModes no",
        "LogLevel VERBOSE",
        "",
    ]))  # fmt: skip
    return config


@contextmanager
def remote_host(folder: Path) -> Iterator[RemoteHost]:
    """Make the host (namespace, veth, addresses, keys, sshd), yield it, remove it all."""
    for tool in ("ip", "ssh-keygen", SSHD):
        if shutil.which(tool) is None:
            pytest.fail(f"the remote-kernel tests need {tool} (scripts/setup-remote installs "
                        "openssh-server)", pytrace=False)  # fmt: skip
    number = next(_count)
    netns = f"kc-remote-{os.getpid()}-{number}"
    local_if, remote_if = f"kc{os.getpid()}{number}h", f"kc{os.getpid()}{number}r"
    with ExitStack() as cleanup:
        made = _run("ip", "netns", "add", netns)
        if made.returncode != 0:
            pytest.fail(
                "network namespaces do not work on this machine, so the remote-kernel tests "
                f"cannot make a second host (they need root and CAP_SYS_ADMIN): `ip netns add` "
                f"said: {made.stderr.strip()}",
                pytrace=False,
            )
        cleanup.callback(_run, "ip", "netns", "del", netns)
        _must("making a veth pair", "ip", "link", "add", local_if, "type", "veth",
              "peer", "name", remote_if)  # fmt: skip
        cleanup.callback(_run, "ip", "link", "del", local_if)  # also removes its peer
        n = _free_subnet()
        local_address, address = f"10.231.{n}.1", f"10.231.{n}.2"
        in_ns = ("ip", "netns", "exec", netns)
        for what, argv in [
            ("moving the veth's end into the namespace",
             ("ip", "link", "set", remote_if, "netns", netns)),
            ("addressing this machine's end", ("ip", "addr", "add", f"{local_address}/24",
                                               "dev", local_if)),
            ("bringing this machine's end up", ("ip", "link", "set", local_if, "up")),
            ("addressing the host's end", (*in_ns, "ip", "addr", "add", f"{address}/24",
                                           "dev", remote_if)),
            ("bringing the host's end up", (*in_ns, "ip", "link", "set", remote_if, "up")),
            ("bringing the host's loopback up", (*in_ns, "ip", "link", "set", "lo", "up")),
        ]:  # fmt: skip
            _must(what, *argv)

        user = getpass.getuser()
        sshd_dir = folder / "sshd"
        client_home = folder / "client-home"
        for d in (sshd_dir, client_home / ".ssh"):
            d.mkdir(parents=True, mode=0o700)
        host_key = _keygen(sshd_dir / "ssh_host_ed25519_key", f"kernel_collab test host {netns}")
        client_key = _keygen(client_home / ".ssh" / "id_ed25519", "kernel_collab test client")
        (sshd_dir / "authorized_keys").write_text(client_key + "\n")
        key_type, key_data = host_key.split()[:2]
        (client_home / ".ssh" / "known_hosts").write_text(f"{address} {key_type} {key_data}\n")
        config = _sshd_config(sshd_dir, address, user)
        # sshd's privilege separation directory (made by the package's service otherwise).
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        _must("checking the test sshd's configuration", SSHD, "-t", "-f", str(config))

        sshd = subprocess.Popen(
            [*in_ns, SSHD, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        host = RemoteHost(netns, address, local_address, user, client_home, folder, sshd)
        cleanup.callback(_stop_everything_on, host)
        listening = queue.Queue[bool]()

        def pump() -> None:
            assert sshd.stderr is not None
            for line in sshd.stderr:
                host.sshd_log.append(line)
                if f"Server listening on {address} port 22" in line:
                    listening.put(True)
            listening.put(False)

        threading.Thread(target=pump, daemon=True).start()
        try:
            ok = listening.get(timeout=SSHD_START_TIMEOUT)
        except queue.Empty:
            ok = False
        if not ok:
            pytest.fail("the remote host's sshd did not start:\n" + "".join(host.sshd_log),
                        pytrace=False)  # fmt: skip
        yield host


def _stop_everything_on(host: RemoteHost) -> None:
    """Kill every process in the host's namespace: sshd, and the kernels it launched (they
    were started by this test, through sshd)."""
    for pid in host.pids():
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    try:
        host.sshd.wait(10)
    except subprocess.TimeoutExpired:
        host.sshd.kill()
        host.sshd.wait()


# --- the kernelspec and the server ------------------------------------------------------------


def launcher_scripts() -> tuple[Path, Path]:
    """gateway-provisioners' Python kernel launcher and the listener it imports, as
    ``jupyter-ssh-spec install`` assembles them into a kernelspec's ``scripts`` folder."""
    spec = importlib.util.find_spec("gateway_provisioners")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("gateway-provisioners is not installed (it is in the test extras)",
                    pytrace=False)  # fmt: skip
    launchers = Path(next(iter(spec.submodule_search_locations))) / "kernel-launchers"
    return (launchers / "python" / "scripts" / "launch_ipykernel.py",
            launchers / "shared" / "scripts" / "server_listener.py")  # fmt: skip


def write_ssh_kernelspec(folder: Path, host: RemoteHost, name: str = KERNEL_NAME) -> Path:
    """Write ``folder/kernels/NAME``: ipykernel on ``host`` through gateway-provisioners'
    ``DistributedProvisioner``, wrapped by ``kernel-collab``; return ``folder`` (for the
    server's ``JUPYTER_PATH``).

    The kernel's ``env`` (the only environment that crosses SSH besides ``KERNEL_ID`` and
    ``KERNEL_USERNAME``) gives it an IPython profile loading kernel_collab's extension, and a
    ``HOME`` and ``TMPDIR`` of the test's (the launcher writes the connection file to TMPDIR).
    """
    spec_dir = folder / "kernels" / name
    (spec_dir / "scripts").mkdir(parents=True)
    for script in launcher_scripts():
        shutil.copy(script, spec_dir / "scripts" / script.name)
    remote = folder / "on-the-host"
    profile = remote / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_kernel_config.py").write_text(EXTENSION_CONFIG)
    (remote / "home").mkdir()
    (remote / "tmp").mkdir()
    spec: dict[str, Any] = {
        "argv": [
            sys.executable, str(spec_dir / "scripts" / "launch_ipykernel.py"),
            "--kernel-id", "{kernel_id}",
            "--port-range", "{port_range}",
            "--response-address", "{response_address}",
            "--public-key", "{public_key}",
            "--transport-encryption", "{transport_encryption}",
            "--kernel-class-name", "ipykernel.ipkernel.IPythonKernel",
        ],
        "display_name": "Python 3 (collaborative, over SSH)",
        "language": "python",
        "env": {
            "IPYTHONDIR": str(remote / "ipython"),
            "HOME": str(remote / "home"),
            "TMPDIR": str(remote / "tmp"),
        },
        "metadata": {
            "kernel_provisioner": {
                "provisioner_name": "kernel-collab",
                "config": {
                    "inner_provisioner": "distributed-provisioner",
                    "inner_config": {
                        "remote_hosts": [host.address],
                        # The test runs as root, which gateway-provisioners refuses by default.
                        "unauthorized_users": [],
                    },
                },
            },
        },
    }  # fmt: skip
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return folder


def remote_server_env(host: RemoteHost, specs: Path, kernel_logs: Path) -> dict[str, str]:
    """The Jupyter server's environment for kernels on ``host`` (see the module's doc)."""
    return {
        "JUPYTER_PATH": str(specs),
        "HOME": str(host.client_home),  # ~/.ssh: known_hosts and the client's key
        "SSH_AUTH_SOCK": "",  # no agent: the key in ~/.ssh
        "GP_REMOTE_USER": host.user,
        "GP_RESPONSE_IP": host.local_address,  # read when gateway-provisioners is imported
        "GP_KERNEL_LOG_DIR": str(kernel_logs),  # the kernels' output, on the (shared) disk
    }


@dataclass
class RemoteSetup:
    """The remote host and a Jupyter server offering :data:`KERNEL_NAME` on it."""

    host: RemoteHost
    server: JupyterServer
    kernel_logs: Path
    folder: Path
    """A folder of the test's (outside the server's root) on the disk both hosts share."""

    def kernel_log(self, kernel_id: str) -> str:
        """What the kernel (and gateway-provisioners' launcher) wrote, for failure messages."""
        path = self.kernel_logs / f"kernel-{kernel_id}.log"
        return path.read_text(errors="replace") if path.exists() else f"(no {path})"


@pytest.fixture(scope="module", name="remote_setup")
def remote_setup_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteSetup]:
    """``remote_setup``: a second host and a Jupyter server launching :data:`KERNEL_NAME`
    kernels on it, for a whole test module (import this into it); each test uses its own
    notebook, hence its own kernel and sidecar."""
    base = tmp_path_factory.mktemp("remote")
    with remote_host(base / "host") as host:
        root, runtime, logs = base / "root", base / "runtime", base / "kernel-logs"
        for d in (root, runtime, logs, base / "shared"):
            d.mkdir()
        specs = write_ssh_kernelspec(base / "jupyter_path", host)
        env = remote_server_env(host, specs, logs)
        with running_server(root, runtime, env=env) as server:
            yield RemoteSetup(host, server, logs, base / "shared")
