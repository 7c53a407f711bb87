"""Joining a Ray cluster: token authentication, and a refusal as one line within seconds.

Imports nothing heavy (no torch, RecBole or Ray at import time), so that ``check_join`` can try
the join in a short-lived process of its own before the engine prepares any data:

- an address where nothing answers a TCP connect is refused at once (``probe_address``);
- the token Ray's own rules find (``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH`` names,
  ``~/.ray/auth_token``) is sent: Ray sends none unless ``RAY_AUTH_MODE=token`` is set before it
  is imported (``ray_environment``); a local cluster runs with token authentication too;
- Ray's own attempts to reach the cluster's GCS are cut from 20 to ``JOIN_ATTEMPTS`` seconds;
- Ray's refusals (a wrong or missing token, another Ray or Python version) become one line
  naming the address and the reason (``join_error``).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from ..errors import UsageError

# Ray picks "its" address with a UDP connect() towards a public resolver and then listens on every
# interface; with this variable at 0 (read when ray is imported) it uses 127.0.0.1.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

CONNECT_PROBE_SECONDS = 5  # an address that does not answer a TCP connect within this is refused
JOIN_ATTEMPTS = 5          # one-second attempts to reach a joined cluster's GCS (Ray's own: 20)
CHECK_SECONDS = 60         # the whole join check (a process importing Ray, joining, leaving)


class ClusterError(UsageError):
    """A Ray cluster that cannot be started or joined; the message names the address and why."""


def auth_token_found() -> str | None:
    """Where Ray's own rules would read an authentication token from, if any of them has one."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    for path in (os.environ.get("RAY_AUTH_TOKEN_PATH"), str(Path.home() / ".ray" / "auth_token")):
        if path and Path(path).is_file() and Path(path).read_text().strip():
            return path
    return None


def ray_environment(address: str | None) -> None:
    """What Ray reads from the environment when it is imported, set before that happens: token
    authentication on for a local cluster and for a joined one where a token is found, and for
    joining, ``JOIN_ATTEMPTS`` one-second attempts to reach the cluster's GCS."""
    if not address or auth_token_found():
        os.environ["RAY_AUTH_MODE"] = "token"
    if address:
        os.environ["RAY_gcs_server_port_wait_time_s"] = str(JOIN_ATTEMPTS)


def probe_address(address: str) -> None:
    """Refuse an address where nothing answers, before Ray's own retries begin."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"cannot join the Ray cluster at {address}: not HOST:PORT")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_PROBE_SECONDS):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ClusterError(f"cannot join the Ray cluster at {address}: {reason.lower()}") from None


def join_error(address: str, error: BaseException) -> ClusterError:
    """Ray's refusal to connect as one line naming the address and the reason (for a version
    mismatch: the cluster's and this process's Ray and Python versions)."""
    text = " ".join(str(error).split())
    versions = re.findall(r"Ray: (\S+) Python: (\S+)", text)
    if "Version mismatch" in text and len(versions) >= 2:
        (cluster_ray, cluster_python), (own_ray, own_python) = versions[0], versions[1]
        return ClusterError(f"cannot join the Ray cluster at {address}: it runs Ray {cluster_ray} on Python "
                            f"{cluster_python}, this process Ray {own_ray} on Python {own_python}; a driver "
                            f"needs the cluster's exact Ray version and Python patch level")
    if isinstance(error, ConnectionError):
        # the port answered (probe_address) but its GCS did not take this driver; Ray logs the
        # gRPC status (InvalidAuthToken for a token) but raises only "Failed to connect"
        found = auth_token_found()
        token = f"the token from {found}" if found else \
            "no token (none in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)"
        return ClusterError(f"cannot join the Ray cluster at {address}: its GCS refused this driver for "
                            f"{JOIN_ATTEMPTS} s; it sent {token}: a wrong or missing authentication token, or "
                            f"the address is not a Ray GCS port")
    return ClusterError(f"cannot join the Ray cluster at {address}: {type(error).__name__}: {text[:300]}")


def join(address: str) -> None:
    """``ray.init`` on the cluster at ``address`` (``ray_environment`` must have run before Ray
    was imported); a refusal is a ``ClusterError``."""
    probe_address(address)
    import ray

    os.environ.pop("RAY_ADDRESS", None)   # with it set, ray.init refuses explicit arguments
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, OSError, ValueError) as error:
        raise join_error(address, error) from None


def check_join(address: str) -> None:
    """Join the cluster once from a short-lived process (Ray imported there only), before any data
    is prepared: a refusal within seconds instead of after the preparation."""
    probe_address(address)
    try:
        done = subprocess.run([sys.executable, "-m", "recbole_mma4ctr.experiment.cluster", address], capture_output=True,
                              text=True, timeout=CHECK_SECONDS, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    except subprocess.TimeoutExpired:
        raise ClusterError(f"cannot join the Ray cluster at {address}: no answer within {CHECK_SECONDS} s") from None
    if done.returncode != 0:
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        raise ClusterError(lines[-1] if lines else f"cannot join the Ray cluster at {address}: the join check "
                           f"ended with status {done.returncode}: {done.stderr.strip()[-300:]}")


def main(address: str) -> int:
    ray_environment(address)
    try:
        join(address)
    except ClusterError as error:
        print(error, flush=True)
        return 1
    import ray

    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
