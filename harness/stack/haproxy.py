"""HAProxy in front of several MCP server instances, keeping each session on its instance.

A session lives in one server process, so a request carrying ``Mcp-Session-Id`` must reach
the instance that issued it: HAProxy learns the id from the initialize response
(``stick store-response``) and routes on the request header (``stick on``). When an
instance dies its health check fails, its sessions are redispatched to a survivor, which
answers 404 for the unknown session: those clients, and only those, re-initialize.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from harness.stack.net import LOOPBACK
from harness.stack.postgres import StackError
from harness.stack.prerequisites import debian_binary
from harness.stack.processes import OwnedProcess, ProcessRegistry, poll_until


class MissingHaproxy(StackError):
    pass


def find_haproxy() -> str | None:
    return debian_binary("haproxy")


def haproxy_binary() -> str:
    found = find_haproxy()
    if not found:
        raise MissingHaproxy(
            "server.instances > 1 needs HAProxy as the load balancer: `apt-get install haproxy` "
            "(or `make bootstrap` as root)"
        )
    return found


def max_connections() -> int:
    """What the open-file limit allows: HAProxy needs two descriptors per proxied connection."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = 100_000 if hard == resource.RLIM_INFINITY else hard
    return max(256, min(50_000, (limit - 200) // 2))


def render_config(
    port: int, backends: list[int], health_path: str | None, maxconn: int = 10_000
) -> str:
    """haproxy.cfg: one frontend on ``port``, sticky sessions over ``backends`` (ports)."""
    check = f"    option httpchk GET {health_path}\n" if health_path else ""
    servers = "".join(
        f"    server s{i} {LOOPBACK}:{p} check inter 500ms fall 2 rise 2\n"
        for i, p in enumerate(backends)
    )
    return (
        "global\n"
        f"    maxconn {maxconn}\n"
        "defaults\n"
        "    mode http\n"
        "    timeout connect 2s\n"
        "    timeout client 120s\n"
        "    timeout server 120s\n"
        "    option redispatch\n"
        "    retries 2\n"
        "frontend mcp\n"
        f"    bind {LOOPBACK}:{port}\n"
        "    default_backend servers\n"
        "backend servers\n"
        "    balance roundrobin\n"
        "    stick-table type string len 64 size 500k expire 30m\n"
        "    stick on req.hdr(mcp-session-id)\n"
        "    stick store-response res.hdr(mcp-session-id)\n"
        f"{check}"
        f"{servers}"
    )


@dataclass
class HaproxyBalancer:
    port: int
    backends: list[int]
    health_path: str | None
    process: OwnedProcess | None = None

    def start(self, registry: ProcessRegistry) -> OwnedProcess:
        config = registry.run_dir / "haproxy.cfg"
        config.write_text(
            render_config(self.port, self.backends, self.health_path, max_connections())
        )
        self.process = registry.start("haproxy", [haproxy_binary(), "-db", "-f", str(config)])
        return self.process

    async def wait_ready(self, timeout_s: float = 10.0) -> None:
        async def accepts() -> bool:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, self.port), 1)
            except (TimeoutError, OSError):
                return False
            writer.close()
            return True

        if await poll_until(accepts, timeout_s, process=self.process, interval_s=0.05):
            return
        tail = self.process.log_tail() if self.process else ""
        raise StackError(f"haproxy did not come up on {LOOPBACK}:{self.port}. Log tail:\n{tail}")
