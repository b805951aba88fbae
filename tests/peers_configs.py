"""Config writers for the real peers (nginx, HAProxy, squid, dante) and the TLS files
they serve: each ``*_argv`` writes its daemon's config into ``workdir`` and returns the
``make_argv(port)`` that :func:`peers.start_daemon` calls.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable
from pathlib import Path

import trustme

SQUID_AUTH_HELPER = "/usr/lib/squid/basic_ncsa_auth"


# -- config writers ------------------------------------------------------------------------


def nginx_argv(
    nginx: str, workdir: Path, upstream: int, cert: Path, key: Path, read_timeout: str, main: str = ""
) -> Callable[[int], list[str]]:
    """nginx terminating TLS and proxying websockets to ``upstream`` (plain ws);
    ``main``: more directives for the main context."""

    def make(port: int) -> list[str]:
        user = "user root;" if os.geteuid() == 0 else ""
        kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        temp = " ".join(f"{kind}_temp_path {workdir}/{kind};" for kind in kinds)
        conf = workdir / "nginx.conf"
        conf.write_text(
            f"""{user}
worker_processes 1;
{main}
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    {temp}
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_read_timeout {read_timeout};
            proxy_send_timeout {read_timeout};
        }}
    }}
}}
"""
        )
        return [nginx, "-p", str(workdir), "-c", str(conf), "-e", f"{workdir}/nginx-error.log", "-g", "daemon off;"]

    return make


def haproxy_argv(
    haproxy: str, workdir: Path, upstream: int, pem: Path, tunnel: str, client: str = "30s"
) -> Callable[[int], list[str]]:
    """HAProxy terminating TLS (``pem``: certificate and key) in front of ``upstream``,
    with ``timeout tunnel``/``timeout client`` and a 1 s ``hard-stop-after``."""

    def make(port: int) -> list[str]:
        conf = workdir / "haproxy.cfg"
        conf.write_text(
            f"""global
    hard-stop-after 1s
defaults
    mode http
    timeout connect 2s
    timeout client {client}
    timeout server 30s
    timeout tunnel {tunnel}
frontend leap
    bind 127.0.0.1:{port} ssl crt {pem}
    default_backend edge
backend edge
    server edge 127.0.0.1:{upstream}
"""
        )
        return [haproxy, "-f", str(conf), "-db"]

    return make


def squid_service(port: int) -> str:
    return f"leapsync{port}"


def squid_argv(
    squid: str, workdir: Path, passwords: Path | None, stock_ports: bool = False
) -> Callable[[int], list[str]]:
    """squid as an HTTP CONNECT proxy, no cache; with ``passwords`` (an htpasswd
    file) it requires basic auth; ``stock_ports``: the stock config's rule allowing
    CONNECT to port 443 only."""

    def make(port: int) -> list[str]:
        auth = "acl SSL_ports port 443\nhttp_access deny CONNECT !SSL_ports\n" if stock_ports else ""
        allow = "http_access allow CONNECT local"
        if passwords is not None:
            auth += f"auth_param basic program {SQUID_AUTH_HELPER} {passwords}\nauth_param basic children 1\n"
            auth += "acl authed proxy_auth REQUIRED\n"
            allow = "http_access allow CONNECT local authed"
        conf = workdir / "squid.conf"
        conf.write_text(
            f"""http_port 127.0.0.1:{port}
pid_filename {workdir}/squid.pid
cache_log {workdir}/squid-cache.log
access_log none
cache deny all
cache_mem 8 MB
coredump_dir {workdir}
netdb_filename none
pinger_enable off
shutdown_lifetime 0 seconds
acl local src 127.0.0.0/8
acl CONNECT method CONNECT
{auth}{allow}
http_access deny all
"""
        )
        # -n: a service name of its own names its shared memory segments (two squids
        # never share them); Daemon.stop removes them
        return [squid, "-N", "-n", squid_service(port), "-f", str(conf)]

    return make


def dante_argv(danted: str, workdir: Path, username: bool) -> Callable[[int], list[str]]:
    """dante as a SOCKS5 proxy; ``username``: the RFC 1929 method, checked against
    system users."""

    def make(port: int) -> list[str]:
        method = "username" if username else "none"
        privileged, unprivileged = (
            ("root", "nobody") if os.geteuid() == 0 else (pwd.getpwuid(os.geteuid()).pw_name,) * 2
        )
        conf = workdir / "danted.conf"
        conf.write_text(
            f"""logoutput: {workdir}/danted.log
internal: 127.0.0.1 port = {port}
external: 127.0.0.1
clientmethod: none
socksmethod: {method}
user.privileged: {privileged}
user.unprivileged: {unprivileged}
client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}
socks pass {{
    from: 127.0.0.0/8 to: 0.0.0.0/0
    command: connect
    log: connect
}}
"""
        )
        return [danted, "-f", str(conf), "-p", f"{workdir}/danted.pid", "-N", "1"]

    return make


# -- TLS -----------------------------------------------------------------------------------


class Certificates:
    """A trustme CA and a server certificate for 127.0.0.1 and localhost, as files."""

    def __init__(self, workdir: Path) -> None:
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        self.ca = workdir / "ca.pem"
        self.cert = workdir / "server-cert.pem"
        self.key = workdir / "server-key.pem"
        self.combined = workdir / "server.pem"
        ca.cert_pem.write_to_path(str(self.ca))
        server.private_key_pem.write_to_path(str(self.key))
        chain = b"".join(blob.bytes() for blob in server.cert_chain_pems)
        self.cert.write_bytes(chain)
        self.combined.write_bytes(chain + server.private_key_pem.bytes())
