"""The outage: a TCP gate between the scaler and Prometheus that the demo cuts."""

from __future__ import annotations

import selectors
import socket
import threading


class TcpGate:
    """A TCP forwarder 127.0.0.1:port -> upstream; :meth:`cut` refuses and drops connections (the outage).

    The scaler is pointed at the gate, never at Prometheus itself, so an outage is what a scaler sees when
    Prometheus is down: connection refused, open connections reset. Prometheus keeps scraping meanwhile.
    """

    def __init__(self, upstream_port: int):
        self.upstream = ("127.0.0.1", upstream_port)
        self.lock = threading.Lock()
        self.conns: set[socket.socket] = set()
        self.open = True
        self.stopped = threading.Event()
        self.listener = self._listen(0)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, name="tcp-gate", daemon=True)
        self.thread.start()

    def _listen(self, port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(64)
        s.settimeout(0.1)
        return s

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            with self.lock:
                if not self.open:
                    client.close()
                    continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=2)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True, name="tcp-gate-pump").start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        for s in (a, b):
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, b if s is a else a)
        try:
            while not self.stopped.is_set():
                for key, _ in sel.select(timeout=0.1):
                    try:
                        data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    except BlockingIOError:
                        continue
                    if not data:
                        return
                    key.data.setblocking(True)
                    key.data.sendall(data)
                    key.data.setblocking(False)
        except OSError:
            return
        finally:
            sel.close()
            with self.lock:
                self.conns -= {a, b}
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        """Refuse new connections (the listener closes) and reset the open ones."""
        with self.lock:
            self.open = False
            conns, self.conns = list(self.conns), set()
            self.listener.close()
        for s in conns:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.close()
            except OSError:
                pass

    def restore(self) -> None:
        with self.lock:
            self.listener = self._listen(self.port)
            self.open = True

    def close(self) -> None:
        self.stopped.set()
        self.cut()
        self.thread.join(timeout=5)
