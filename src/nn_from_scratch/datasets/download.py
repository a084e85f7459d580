"""Fetching a file from a list of mirrors into a cache directory, atomically and verified.

Each mirror is tried in turn. A download goes to a temporary file beside its destination, is
checked by the caller's ``validate`` function, and only then renamed into place with
:func:`os.replace`, so the cache never holds a partial or unverified file, even when two
processes download at once, and a file already at the destination is only ever replaced by a
verified one. A download that fails its check is deleted. When every mirror fails,
:class:`DownloadError` lists what each one did.

Time is bounded twice: ``timeout`` for the connection and each read, and ``deadline`` for a
mirror's whole response (headers included). A server that trickles bytes just fast enough to
beat the per-read timeout is cut off at the deadline, and the next mirror is tried.

Only the standard library's :mod:`urllib` is used; proxies from the usual environment
variables (``https_proxy``, ``no_proxy``, ...) are honoured.
"""

from __future__ import annotations

import http.client
import os
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Sequence

__all__ = ["CACHE_ENV_VAR", "DEFAULT_DEADLINE", "DownloadError", "default_cache_dir", "fetch"]

CACHE_ENV_VAR = "NN_FROM_SCRATCH_CACHE_DIR"
# A download larger than this is not the small dataset file asked for.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
# Seconds one mirror may take for one whole file (MNIST's largest is 9.9 MB).
DEFAULT_DEADLINE = 600.0
_CHUNK = 1 << 16


class DownloadError(OSError):
    """No mirror delivered a valid file. ``attempts`` holds ``(url, reason)`` for each try.

    Args:
        filename: the file that could not be downloaded.
        attempts: ``(url, reason)`` for each URL tried, in order.

    Example:
        >>> print(DownloadError("a.gz", [("https://example.org/a.gz", "HTTP 404")]))
        could not download a.gz from any of 1 mirror(s):
          https://example.org/a.gz: HTTP 404
    """

    def __init__(self, filename: str, attempts: Sequence[tuple[str, str]]) -> None:
        self.filename = filename
        self.attempts = list(attempts)
        lines = "\n".join(f"  {url}: {reason}" for url, reason in self.attempts)
        super().__init__(f"could not download {filename} from any of {len(self.attempts)} mirror(s):\n{lines}")

    def __str__(self) -> str:
        return self.args[0]


def default_cache_dir() -> Path:
    """The root of the download cache.

    ``$NN_FROM_SCRATCH_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/nn_from_scratch``, else
    ``~/.cache/nn_from_scratch``. Each dataset uses a subdirectory of it.

    Returns:
        The directory (not created here).

    Example:
        >>> default_cache_dir().name     # with NN_FROM_SCRATCH_CACHE_DIR unset  # doctest: +SKIP
        'nn_from_scratch'
    """
    configured = os.environ.get(CACHE_ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "nn_from_scratch"


def fetch(
    urls: Sequence[str],
    destination: str | os.PathLike[str],
    validate: Callable[[Path], object],
    *,
    timeout: float = 30.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    deadline: float = DEFAULT_DEADLINE,
) -> Path:
    """Download the first good copy among ``urls`` to ``destination`` and return its path.

    Args:
        urls: candidate URLs of the same file, tried in order (``http``, ``https`` or ``file``).
        destination: where the file goes; its directory is created if needed.
        validate: called with the path of the downloaded temporary file; it raises
            ``ValueError`` (or ``OSError``) when the content is wrong. Its name for the file
            is the temporary one, so :class:`DownloadError` records the reason per URL.
        timeout: seconds to wait for each connection and each read.
        max_bytes: a response larger than this is rejected.
        deadline: seconds one URL may take in all (connection, headers and body); then the
            download from it is abandoned and the next URL is tried.

    Raises:
        DownloadError: no URL gave a file that passed ``validate``; lists each URL's failure.
        ValueError: ``urls`` is empty or holds an unsupported scheme.

    Returns:
        ``destination`` as a ``Path``, holding the validated file.

    Example:
        >>> import tempfile
        >>> src = Path(tempfile.mkdtemp()) / "a.txt"
        >>> _ = src.write_text("hello")
        >>> fetch([src.as_uri()], src.with_name("copy.txt"), validate=lambda p: None).read_text()
        'hello'
    """
    if not urls:
        raise ValueError("fetch: no mirror URLs given")
    for what, value in (("timeout", timeout), ("deadline", deadline)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
            raise ValueError(f"fetch: {what} must be a positive number of seconds, got {value!r}")
    for url in urls:
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https", "file"):
            raise ValueError(f"fetch: unsupported URL scheme {scheme!r} in {url!r}; use http, https or file")

    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    attempts: list[tuple[str, str]] = []
    for url in urls:
        descriptor, temporary_name = tempfile.mkstemp(
            # The suffix keeps the destination's name, so ".gz" still says "gzipped" to validate.
            dir=destination.parent, prefix=".partial-", suffix=f"-{destination.name}"
        )
        temporary = Path(temporary_name)
        try:
            with os.fdopen(descriptor, "wb") as sink:
                _download(url, sink, timeout, max_bytes, deadline)
            validate(temporary)
            os.replace(temporary, destination)
            return destination
        except (OSError, http.client.HTTPException, ValueError) as error:
            attempts.append((url, _describe(error, temporary, destination)))
        finally:
            temporary.unlink(missing_ok=True)
    raise DownloadError(destination.name, attempts)


class _Watchdog:
    """Shuts down every socket it was given once ``seconds`` have passed.

    A blocked ``recv`` returns at once when its socket is shut down, which no per-read timeout
    achieves against a server that sends one byte every few seconds.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> "_Watchdog":
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _watched_opener(watchdog: _Watchdog) -> urllib.request.OpenerDirector:
    """An opener (proxies from the environment included) whose connections the watchdog can cut."""

    class HTTPConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            super().connect()
            watchdog.watch(self.sock)

    class HTTPSConnection(http.client.HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            watchdog.watch(self.sock)

    class HTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(HTTPConnection, req)

    class HTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(HTTPSConnection, req, context=self._context)

    return urllib.request.build_opener(HTTPHandler, HTTPSHandler)


def _download(url: str, sink, timeout: float, max_bytes: int, deadline: float) -> None:
    from .. import __version__

    # Some mirrors refuse urllib's default User-Agent.
    request = urllib.request.Request(url, headers={"User-Agent": f"nn_from_scratch/{__version__} (urllib)"})
    start = time.monotonic()
    with _Watchdog(deadline) as watchdog:
        try:
            with _watched_opener(watchdog).open(request, timeout=min(timeout, deadline)) as response:
                announced = response.headers.get("Content-Length")
                announced = int(announced) if announced and announced.isdigit() else None
                if announced is not None and announced > max_bytes:
                    raise ValueError(f"the server announces {announced} bytes, more than the limit of {max_bytes}")
                received = 0
                # read1: whatever one recv brings, so the deadline is checked between recvs.
                read = getattr(response, "read1", response.read)
                while chunk := read(_CHUNK):
                    received += len(chunk)
                    if received > max_bytes:
                        raise ValueError(f"more than the limit of {max_bytes} bytes received")
                    sink.write(chunk)
                    if time.monotonic() - start > deadline:
                        watchdog._expire()
                        break
        except (OSError, http.client.HTTPException, ValueError):
            if not watchdog.expired:
                raise
        if watchdog.expired:
            raise TimeoutError(f"the download took longer than the deadline of {deadline:g} s; abandoned")
    if announced is not None and received != announced:
        raise ValueError(f"incomplete download: {received} of {announced} bytes")


def _describe(error: BaseException, temporary: Path, destination: Path) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"unreachable ({error.reason})"
    if isinstance(error, TimeoutError):
        return f"timed out: {error}"
    # Validation messages name the temporary file; the user knows it by its final name.
    text = str(error).replace(str(temporary), destination.name)
    return f"{type(error).__name__}: {text}"
