"""The embedded servers' generic machinery, protocol-agnostic: the listening socket
(:mod:`.listener`), one thread-served websocket connection (:mod:`.connection`,
:mod:`.sockets`, :mod:`.frames_in`), bounded outboxes (:mod:`.outbox`), the base server
(:mod:`.embedded`) and the checks on constructor options (:mod:`.validation`).
"""
