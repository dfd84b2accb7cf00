"""The peers, supervisord (numprocs) and circus (numprocesses, incr), with default settings.

They are installed from PyPI into a virtual environment of the benchmark's own (made with the
system python3, kept in a cache directory), and run on this host under tests.reaper, a
subreaper, so that nothing they leave behind lingers as a zombie. They are timed from the
kernel's view (exec and exit events) and never polled.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

from tests.integration.container import CHECKOUT

from .common import (
    MARK_CIRCUS,
    MARK_SUPERVISORD,
    Options,
    log,
    measure_respawn,
    rss_mib,
    succeeded,
    wait_for,
)
from .inside import time_cmd
from .procwatch import ProcWatch, pids_matching
from .stats import Results

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pazuzu-bench"
PEERS_VENV = CACHE / "peers"
PACKAGES = ("supervisor", "circus", "py-spy")
COUNT = 100


def ensure_venv() -> Path:
    """The peers' virtual environment, created and filled from PyPI on first use."""
    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        log(f"peers: creating {PEERS_VENV}")
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(PEERS_VENV)], check=True, timeout=120)
    probe = "import supervisor, circus"
    probed = subprocess.run(
        [str(python), "-c", probe], check=False, capture_output=True, timeout=60
    )
    if probed.returncode:
        log(f"peers: pip install {' '.join(PACKAGES)}")
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PACKAGES],
            check=True,
            timeout=600,
        )
    return PEERS_VENV / "bin"


def versions(bin_dir: Path) -> str:
    out = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "list", "--disable-pip-version-check"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    wanted = {"supervisor", "circus"}
    return ", ".join(
        " ".join(line.split()[:2])
        for line in out.splitlines()
        if line.split()[:1] and line.split()[0].lower() in wanted
    )


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=120)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(120)
        self.sock.connect(self._path)


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixConnection(self._path)


class Supervised:
    """A peer daemon under tests.reaper in a temporary directory; `close()` removes it all."""

    def __init__(self, name: str, marker: str) -> None:
        self.name = name
        self.marker = marker
        self.root = Path(tempfile.mkdtemp(prefix=f"pazuzu-bench-{name}-"))
        self.reaper: subprocess.Popen[bytes] | None = None

    def start(self, argv: list[str]) -> None:
        with (self.root / "daemon.log").open("ab") as out:
            self.reaper = subprocess.Popen(
                [sys.executable, "-m", "tests.reaper", str(self.root / "exit"), *argv],
                cwd=CHECKOUT,
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def daemon_pid(self) -> int:
        assert self.reaper is not None
        children = Path(f"/proc/{self.reaper.pid}/task/{self.reaper.pid}/children").read_text()
        for pid in children.split():
            return int(pid)
        raise RuntimeError(f"{self.name} is not running:\n{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return "\n".join((self.root / "daemon.log").read_text().splitlines()[-20:])
        except OSError:
            return ""

    def close(self) -> None:
        """SIGTERM the daemon (both stop their workers on it), then kill any worker left."""
        if self.reaper is not None:
            try:
                pid = self.daemon_pid()
                os.kill(pid, signal.SIGTERM)
                wait_for(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), 40, "exit")
            except (RuntimeError, OSError, TimeoutError) as exc:
                log(f"{self.name}: {exc}")
            for pid in pids_matching(self.marker):
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not pids_matching(self.marker), 10, f"{self.name} workers gone")
            self.reaper.terminate()
            self.reaper.wait(timeout=10)
            self.reaper = None
        shutil.rmtree(self.root, ignore_errors=True)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def supervisord(bin_dir: Path, watch: ProcWatch, results: Results, options: Options) -> None:
    peer = Supervised("supervisord", MARK_SUPERVISORD)
    try:
        sock = peer.root / "supervisor.sock"
        (peer.root / "logs").mkdir()
        conf = peer.root / "supervisord.conf"
        conf.write_text(
            f"[unix_http_server]\nfile={sock}\n\n"
            f"[supervisord]\nnodaemon=true\nlogfile={peer.root}/supervisord.log\n"
            f"pidfile={peer.root}/supervisord.pid\nchildlogdir={peer.root}/logs\n\n"
            f"[supervisorctl]\nserverurl=unix://{sock}\n\n"
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
            f"[program:web]\ncommand=/bin/sleep {MARK_SUPERVISORD}\nnumprocs={COUNT}\n"
            "process_name=%(program_name)s_%(process_num)d\nautostart=false\n"
        )
        peer.start([str(bin_dir / "supervisord"), "-c", str(conf)])
        wait_for(sock.exists, 30, "supervisord's socket")
        rpc = xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(str(sock)))
        wait_for(lambda: _supervisord_running(rpc), 30, "supervisord")
        for rep in range(options.reps):
            log(f"supervisord: rep {rep + 1}/{options.reps}: start {COUNT}")
            mark = watch.mark()
            t0 = time.monotonic_ns()
            rpc.supervisor.startProcessGroup("web", False)
            born = watch.new_pids(MARK_SUPERVISORD, mark, COUNT, timeout=120)
            if len(born) < COUNT:
                raise RuntimeError(f"supervisord started {len(born)} of {COUNT}")
            results.add("supervisord.start.100", "s", (max(born.values()) - t0) / 1e9)
            rpc.supervisor.stopProcessGroup("web", True)
            wait_for(lambda: not pids_matching(MARK_SUPERVISORD), 60, "supervisord stop")
        # The operator's command: `supervisorctl start` waits until every process is RUNNING,
        # which supervisord says once it has stayed up startsecs (1 s by default).
        ctl = [str(bin_dir / "supervisorctl"), "-c", str(conf)]
        for rep in range(options.reps):
            log(f"supervisord: rep {rep + 1}/{options.reps}: supervisorctl start web:*")
            if rep:
                rpc.supervisor.stopProcessGroup("web", True)
                wait_for(lambda: not pids_matching(MARK_SUPERVISORD), 60, "supervisord stop")
            [seconds] = succeeded(time_cmd(1, [*ctl, "start", "web:*"]), "supervisorctl start")
            running = len(pids_matching(MARK_SUPERVISORD))
            if not _supervisord_all_running(rpc) or running != COUNT:
                raise RuntimeError(f"supervisorctl start returned with {running} up")
            results.add("supervisord.start.cli.100", "s", seconds)
        results.add("supervisord.rss.100", "MiB", rss_mib(Path(f"/proc/{peer.daemon_pid()}")))
        status = [str(bin_dir / "supervisorctl"), "-c", str(conf), "status"]
        for seconds in succeeded(time_cmd(10, status), "supervisorctl status"):
            results.add("supervisord.status.cli", "ms", seconds * 1000)
        log(f"supervisord: respawn, {options.kills} kills")
        measure_respawn(watch, results, "supervisord.respawn", MARK_SUPERVISORD, options.kills)
    finally:
        peer.close()


def _supervisord_all_running(rpc: xmlrpc.client.ServerProxy) -> bool:
    infos: list[dict[str, Any]] = rpc.supervisor.getAllProcessInfo()  # type: ignore[assignment]
    return len(infos) == COUNT and all(info["statename"] == "RUNNING" for info in infos)


def _supervisord_running(rpc: xmlrpc.client.ServerProxy) -> bool:
    state: dict[str, Any] = rpc.supervisor.getState()  # type: ignore[assignment]  # XML-RPC
    return state.get("statename") == "RUNNING"


_CIRCUS_CALL = """
import json, sys, time
from circus.client import CircusClient
client = CircusClient(endpoint=sys.argv[1], timeout=120)
t0 = time.monotonic_ns()
reply = client.call(json.loads(sys.argv[2]))
print(json.dumps({"t0": t0, "t1": time.monotonic_ns(), "reply": reply}))
"""


def circus(bin_dir: Path, watch: ProcWatch, results: Results, options: Options) -> None:
    peer = Supervised("circus", MARK_CIRCUS)
    try:
        endpoint = f"tcp://127.0.0.1:{_free_port()}"
        conf = peer.root / "circus.ini"
        conf.write_text(
            f"[circus]\nendpoint = {endpoint}\npubsub_endpoint = tcp://127.0.0.1:{_free_port()}\n"
            f"logoutput = {peer.root}/circusd.log\n\n"
            f"[watcher:web]\ncmd = /bin/sleep {MARK_CIRCUS}\nnumprocesses = {COUNT}\n"
            "autostart = false\n"
        )
        peer.start([str(bin_dir / "circusd"), str(conf)])

        def call(command: str, **properties: Any) -> dict[str, Any]:
            out = subprocess.run(
                [
                    str(bin_dir / "python"),
                    "-c",
                    _CIRCUS_CALL,
                    endpoint,
                    json.dumps({"command": command, "properties": properties}),
                ],
                capture_output=True,
                text=True,
                timeout=150,
                check=True,
            )
            result: dict[str, Any] = json.loads(out.stdout)
            return result

        def answers() -> bool:
            try:
                return bool(call("list")["reply"].get("status") == "ok")
            except (subprocess.SubprocessError, ValueError):
                return False

        def stopped() -> bool:
            # `stop` answers before the arbiter has finished it, and the arbiter refuses other
            # commands until then ("arbiter is already running watcher_stop command").
            reply = call("status", name="web")["reply"]
            return bool(reply.get("status") == "stopped")

        wait_for(answers, 30, "circusd answers", interval=0.5)
        for rep in range(options.reps):
            log(f"circus: rep {rep + 1}/{options.reps}: start web ({COUNT} processes)")
            mark = watch.mark()
            out = call("start", name="web")
            if out["reply"].get("status") != "ok":
                raise RuntimeError(f"circus refused to start web: {out['reply']}")
            born = watch.new_pids(MARK_CIRCUS, mark, COUNT, timeout=120)
            if len(born) < COUNT:
                raise RuntimeError(f"circus started {len(born)} of {COUNT}: {out}")
            results.add("circus.start.100", "s", (max(born.values()) - out["t0"]) / 1e9)
            if rep < options.reps - 1:
                call("stop", name="web")
                wait_for(lambda: not pids_matching(MARK_CIRCUS), 60, "circus stop")
                wait_for(stopped, 60, "circus's stop command done", interval=0.5)
        log("circus: incr web 50 (100 -> 150)")
        mark = watch.mark()
        out = call("incr", name="web", nb=50)
        born = watch.new_pids(MARK_CIRCUS, mark, 50, timeout=60)
        if len(born) == 50:
            results.add("circus.scale150", "s", (max(born.values()) - out["t0"]) / 1e9)
        call("decr", name="web", nb=50)
        wait_for(lambda: len(pids_matching(MARK_CIRCUS)) == COUNT, 60, "circus decr")
        time.sleep(1.5)
        results.add("circus.rss.100", "MiB", rss_mib(Path(f"/proc/{peer.daemon_pid()}")))
        status = [str(bin_dir / "circusctl"), "--endpoint", endpoint, "status"]
        for seconds in succeeded(time_cmd(10, status), "circusctl status"):
            results.add("circus.status.cli", "ms", seconds * 1000)
        log(f"circus: respawn, {options.kills} kills")
        measure_respawn(watch, results, "circus.respawn", MARK_CIRCUS, options.kills)
    finally:
        peer.close()


def run(watch: ProcWatch, results: Results, options: Options) -> None:
    bin_dir = ensure_venv()
    results.notes.append(f"peers: {versions(bin_dir)}, default settings, from PyPI")
    for name, measure in (("supervisord", supervisord), ("circus", circus)):
        try:
            measure(bin_dir, watch, results, options)
        except Exception as exc:
            log(f"{name}: failed: {exc}")
            for key in ("start.100", "start.cli.100", "rss.100", "respawn", "status.cli"):
                results.miss(f"{name}.{key}", f"{name} failed: {exc}")
