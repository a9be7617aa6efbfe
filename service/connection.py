"""How ``intygstjanst serve`` takes client connections, and lets go of them (issue 10, items 7 and 8).

- ``Supervisor``: with several workers, the listening socket closes as the drain begins, so that a
  client connecting meanwhile is refused at once rather than left hanging.
"""

from __future__ import annotations

from uvicorn.supervisors import Multiprocess


class Supervisor(Multiprocess):
    """uvicorn's supervisor of worker processes, which also closes its own copy of the listening socket
    when shutdown begins.

    The parent binds the socket and each worker listens on a copy of it. On SIGTERM each worker closes
    its copy as it starts to drain (uvicorn's ``Server.shutdown``), but uvicorn (0.54) keeps the parent's
    copy open until the parent exits. The socket then still listens: the kernel completes handshakes
    into a backlog that no process accepts any more, so a client connecting during the drain hung until
    the grace period ended, and was then reset. Once every copy is closed the kernel refuses such a
    client at once, and a load balancer or client retries elsewhere."""

    def terminate_all(self) -> None:
        # The supervisor's first step of shutdown (``Multiprocess.run``), before SIGTERM to the workers:
        # they accept until they have it, then close their copies and the socket with them.
        for sock in self.sockets:
            sock.close()
        super().terminate_all()
