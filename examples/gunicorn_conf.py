"""gunicorn settings for ``flask_sse:app``: one Leap client per worker.

Threads do not survive ``fork()``. gunicorn imports the app in each worker after
forking (``preload_app`` stays off), and the client's threads start in
``post_worker_init``, inside the worker once it is fully set up (its signal handlers
installed: a SIGTERM that arrives while ``post_fork`` runs would kill the worker
before ``worker_exit`` could close the client); ``worker_exit`` closes it so no thread
outlives the worker. Use the
``gthread`` worker class (or ``sync``): leap-sync is thread-based and does not mix with
gevent/eventlet monkey-patching.

    cd examples && gunicorn -c gunicorn_conf.py flask_sse:app
"""

from __future__ import annotations

import os
from typing import Any

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
worker_class = "gthread"
threads = 8  # each open /events stream holds one
preload_app = False  # never start leap-sync threads in the arbiter before forking
timeout = 0  # SSE responses are long-lived; gthread workers still heartbeat the arbiter


def post_worker_init(worker: Any) -> None:
    import flask_sse

    flask_sse.start_leap()
    worker.log.info("leap client connected in worker %s", worker.pid)


def worker_exit(server: Any, worker: Any) -> None:
    import flask_sse

    flask_sse.leap_client.close()
