"""A real two-node Ray cluster on this one machine, for tests: `ray start --head` plus a second
`ray start`, each in its own mount namespace, stopped by pid whatever happens.

    with ray_cluster(cpus_per_node=4, env=s3.env) as cluster:
        cluster.address          # 127.0.0.1:<port>: ray.address / RAY_ADDRESS
        cluster.dashboard        # http://127.0.0.1:<port>: `ray job submit --address`
        cluster.node_view(1)     # the second node's filesystem as it sees it (/proc/<pid>/root)

Both nodes hide /work (this machine's source trees, where the editable install of `runner`
points), so a worker imports only the code the run ships to it. The second node also has
its own /tmp, ~/.cache (tmpfs) and home (in that /tmp): it cannot see the driver's run
folder, the embedded model's converted copy or the hub cache, as a separate machine could not. Every address is
loopback. Token auth is off (RAY_AUTH_MODE=disabled): a throwaway cluster of one user.
Needs root (unshare, mount). The cluster's logs are removed with it unless
RUNNER_KEEP_CLUSTER_LOGS is set.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import psutil

from tests.s3_server import free_port

RAY_CLI = str(Path(sys.executable).parent / "ray")
START_TIMEOUT_S = 120.0
HIDDEN_FROM_EVERY_NODE = ("/work",)
PRIVATE_TO_SECOND_NODE = ("/tmp", str(Path.home() / ".cache"))
# The second node's home, inside its private /tmp: what a process there writes under ~ (Ray
# Data LLM's download locks, caches) must not meet the head's, as on another machine.
SECOND_NODE_HOME = "/tmp/home"


@dataclass
class Node:
    pid: int  # the `ray start --block` process: its session holds every process of the node
    log_path: Path
    temp_dir: str  # Ray's temp dir as the node sees it (the head's path; the second node's is in its own /tmp)

    def processes(self) -> List[psutil.Process]:
        found = []
        for proc in psutil.process_iter():
            try:
                if os.getsid(proc.pid) == self.pid:
                    found.append(proc)
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        return found

    def alive(self) -> bool:
        return psutil.pid_exists(self.pid) and psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE


@dataclass
class Cluster:
    address: str
    dashboard: str
    nodes: List[Node] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)

    def node_view(self, index: int) -> Path:
        """The node's filesystem as its processes see it (its private mounts included)."""
        return Path(f"/proc/{self.nodes[index].pid}/root")

    def session_dirs(self, index: int) -> List[Path]:
        """The node's Ray session folders (logs, runtime resources), as the node sees them.
        A worker node makes no session_latest link, hence the glob."""
        root = self.node_view(index) / self.nodes[index].temp_dir.lstrip("/")
        return [p for p in root.glob("session_2*") if p.is_dir() and not p.is_symlink()]

    def node_of_worker(self, pid: int) -> Optional[int]:
        """Which node ran the Ray worker with this pid (from its log file's name)."""
        for index in range(len(self.nodes)):
            for session in self.session_dirs(index):
                if any((session / "logs").glob(f"python-core-worker-*_{pid}.log")):
                    return index
        return None

    def ray_state(self) -> dict:
        """Nodes and actors as the cluster's GCS sees them, read by a separate driver."""
        code = (
            "import json, ray\n"
            f"ray.init(address={self.address!r}, log_to_driver=False)\n"
            "from ray._private import state\n"
            "nodes = [{'id': n['NodeID'], 'alive': n['Alive'], 'resources': n['Resources'], 'labels': n.get('Labels', {})}\n"
            "         for n in ray.nodes()]\n"
            "actors = [{'id': a['ActorID'], 'state': a['State'], 'name': a['Name'], 'class': a['ActorClassName'],\n"
            "           'job': a['JobID'], 'pid': a['Pid'], 'node': a['Address']['NodeID'], 'detached': a['IsDetached']}\n"
            "          for a in state.actors().values()]\n"
            "print('STATE' + json.dumps({'nodes': nodes, 'actors': actors}))\n"
            "ray.shutdown()\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], env={**self.env}, cwd="/", capture_output=True, text=True, timeout=120,
        )
        for line in done.stdout.splitlines():
            if line.startswith("STATE"):
                return json.loads(line[len("STATE"):])
        raise RuntimeError(f"could not read the cluster's state: {done.stdout[-2000:]} {done.stderr[-3000:]}")


def _node_env(extra: Optional[Dict[str, str]]) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PYTHONPATH"))}
    env.update(extra or {})
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    return env


def _in_namespace(command: List[str], tmpfs_over, home: Optional[str] = None) -> List[str]:
    """`command` in a private mount namespace, with a fresh tmpfs over each of `tmpfs_over`.

    A watchdog in the node's process group ends the node if this process dies without its
    clean-up (SIGKILL, a CI timeout): a leftover cluster would hold cores others share.
    """
    lines = ["set -e", *(f"mount -t tmpfs tmpfs {path}" for path in tmpfs_over)]
    if home:
        lines += [f"mkdir -p {home}", f"export HOME={home}"]
    lines += [
        # The node's processes must not keep a working directory on a folder the tmpfs hides.
        "cd /",
        f"(while kill -0 {os.getpid()} 2>/dev/null; do sleep 2; done; kill -TERM 0; sleep 10; kill -KILL 0) &",
        'exec "$@"',
    ]
    script = "\n".join(lines)
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "node", *command]


def _start(command: List[str], env: Dict[str, str], log_path: Path, temp_dir: str) -> Node:
    with open(log_path, "wb") as log:
        # Its own session: the kill points of a run (its process group) and Ctrl-C aimed at
        # pytest never reach the cluster, and every process of the node is found by it.
        proc = subprocess.Popen(command, env=env, cwd="/", stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return Node(pid=proc.pid, log_path=log_path, temp_dir=temp_dir)


def _ports(*names: str) -> Dict[str, int]:
    return {name: free_port() for name in names}


def _wait_for_nodes(cluster: Cluster, wanted: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    last = None
    while time.monotonic() < deadline:
        for node in cluster.nodes:
            if not node.alive():
                raise RuntimeError(f"ray start exited early: {node.log_path.read_text()[-3000:]}")
        try:
            last = cluster.ray_state()
            if sum(1 for n in last["nodes"] if n["alive"]) >= wanted:
                return
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            last = error
        time.sleep(2)
    raise RuntimeError(f"the cluster did not reach {wanted} nodes in {START_TIMEOUT_S:.0f} s: {last}")


def stop(cluster: Cluster, grace_s: float = 2.0) -> None:
    """SIGTERM every process of each node (found by its session), then SIGKILL what is left."""
    procs = [p for node in cluster.nodes for p in node.processes()]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    for node in cluster.nodes:  # reap the `ray start` processes we started
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(node.pid, os.WNOHANG)


@contextlib.contextmanager
def ray_cluster(cpus_per_node: int = 4, env: Optional[Dict[str, str]] = None) -> Iterator[Cluster]:
    work = Path(tempfile.mkdtemp(prefix="raycl-"))
    node_env = _node_env(env)
    head_ports = _ports("port", "dashboard", "client", "agent", "agent_grpc", "metrics", "runtime_env", "node_manager", "object_manager")
    worker_ports = _ports("agent", "agent_grpc", "metrics", "runtime_env", "node_manager", "object_manager")
    address = f"127.0.0.1:{head_ports['port']}"
    head_temp = str(work / "ray")  # short: Ray's socket paths must fit in 107 bytes

    def node_args(ports, first_worker_port):
        return [
            "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus_per_node}", "--num-gpus=0",
            f"--dashboard-agent-listen-port={ports['agent']}", f"--dashboard-agent-grpc-port={ports['agent_grpc']}",
            f"--metrics-export-port={ports['metrics']}", f"--runtime-env-agent-port={ports['runtime_env']}",
            f"--node-manager-port={ports['node_manager']}", f"--object-manager-port={ports['object_manager']}",
            f"--min-worker-port={first_worker_port}", f"--max-worker-port={first_worker_port + 999}",
            "--disable-usage-stats",
        ]

    head_command = [
        RAY_CLI, "start", "--head", f"--port={head_ports['port']}", f"--temp-dir={head_temp}",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={head_ports['dashboard']}",
        f"--ray-client-server-port={head_ports['client']}", *node_args(head_ports, 30000),
    ]
    worker_command = [RAY_CLI, "start", f"--address={address}", *node_args(worker_ports, 31000)]
    cluster = Cluster(address=address, dashboard=f"http://127.0.0.1:{head_ports['dashboard']}", env=node_env)
    previous = _raise_on_sigterm()
    try:
        cluster.nodes.append(_start(_in_namespace(head_command, HIDDEN_FROM_EVERY_NODE), node_env, work / "head.log", head_temp))
        _wait_for_nodes(cluster, 1)
        cluster.nodes.append(
            _start(
                _in_namespace(worker_command, HIDDEN_FROM_EVERY_NODE + PRIVATE_TO_SECOND_NODE, SECOND_NODE_HOME), node_env, work / "node2.log", head_temp,
            )
        )
        _wait_for_nodes(cluster, 2)
        yield cluster
    finally:
        stop(cluster)
        if not os.environ.get("RUNNER_KEEP_CLUSTER_LOGS"):
            shutil.rmtree(work, ignore_errors=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_on_sigterm():
    """A SIGTERM (a CI timeout) ends this process through its clean-up, which stops the
    cluster, instead of at once."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, handler)
