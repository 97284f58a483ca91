"""Where experiments live: a local folder, or a folder in an object store (`s3://…`, `gs://…`).

Ray Tune writes an experiment through a pyarrow filesystem, so the readers and the study driver use the
same one. A local path stays a `pathlib.Path` (the readers keep their checks for pipes, links and
devices); a URI becomes a `StorePath`: the part of `pathlib`'s API the readers and writers here use, over
`pyarrow.fs`. Nothing is copied whole to the local disk: a listing is one request, a record one read.

An S3-compatible endpoint is given the usual way, through the AWS environment (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`), or as pyarrow's URI query
(`s3://bucket/runs?endpoint_override=host:9000&scheme=http`), which is kept on every path below it.

Names below a folder are joined as plain path segments, never re-parsed as a URI, so a key is read
where Tune wrote it; `str()` escapes what a URI cannot hold as typed (`#`, `?`, `%`, spaces), so the
URI opens the same path again, through pyarrow and Tune alike.

A store that accepts connections and never answers would hold pyarrow's S3 client for about 100 s per
request (it retries); here each request is given up after `STORE_ATTEMPTS` attempts that each receive
nothing for `STORE_REQUEST_TIMEOUT_S` seconds, so a command answers within about 12 s. Every fault of
the store is a `StoreError` naming the URI and what was being done.
"""
from __future__ import annotations

import contextlib
import errno
import fnmatch
import io
import stat
import urllib.parse
from pathlib import Path
from typing import NamedTuple

import pyarrow.fs as pafs

from balpoe.files import atomic_write


STORE_CONNECT_TIMEOUT_S = 5.0
STORE_REQUEST_TIMEOUT_S = 5.0  # an attempt that receives nothing for this long is given up (AWS's default is 3 s)
STORE_ATTEMPTS = 2
URI_PATH_SAFE = "/:@!$&'()*+,;=-._~"  # RFC 3986's path characters: kept as they are in `str()`


def is_uri(path: str | Path) -> bool:
    return isinstance(path, StorePath) or "://" in str(path)


class StoreError(OSError):
    """A store's fault while acting on one object or folder; `str()` is one line: its URI and what failed."""

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def fault_detail(err: Exception) -> str:
    """pyarrow's text of a store's fault without its preamble ("When listing objects under key …: AWS
    Error") and request id, on one line."""
    text = err.strerror if isinstance(err, StoreError) else str(err)
    detail = text.split("AWS Error ", 1)[-1].split(" (Request ID", 1)[0]
    return " ".join(detail.split())[:200]


def bounded(filesystem: pafs.FileSystem) -> pafs.FileSystem:
    """The same S3 filesystem with bounded waits (see the module's text); other filesystems as they are.
    pyarrow's URIs cannot set timeouts, so the options are copied through its pickling form."""
    if not isinstance(filesystem, pafs.S3FileSystem):
        return filesystem
    _, (options,) = filesystem.__reduce__()
    return pafs.S3FileSystem(**{**options, "region": filesystem.region, "connect_timeout": STORE_CONNECT_TIMEOUT_S,
                                "request_timeout": STORE_REQUEST_TIMEOUT_S,
                                "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=STORE_ATTEMPTS)})


class StoreStat(NamedTuple):
    """What the readers take from `os.stat_result`; an object has no inode, so `st_ino` is 0."""
    st_mode: int
    st_size: int
    st_mtime_ns: int
    st_ino: int = 0

    @property
    def st_mtime(self) -> float:
        return self.st_mtime_ns / 1e9


class StorePath:
    """A file or folder in an object store, named by its URI (`str()`); folders are key prefixes."""

    def __init__(self, filesystem: pafs.FileSystem, path: str, scheme: str, query: str = "",
                 known: pafs.FileInfo | None = None):
        self.filesystem, self.path, self.scheme, self.query = filesystem, path.strip("/"), scheme, query
        self._known = known  # from the listing that found it: saves a request

    @classmethod
    def from_uri(cls, uri: str) -> "StorePath":
        """Raises ValueError naming the URI when pyarrow has no filesystem for it."""
        try:
            filesystem, path = pafs.FileSystem.from_uri(uri)
        except Exception as err:  # pyarrow.lib.ArrowInvalid and friends
            raise ValueError(f"{uri}: {err}") from None
        scheme = uri.split("://", 1)[0].lower()
        query = "?" + uri.split("?", 1)[1] if "?" in uri else ""
        return cls(bounded(filesystem), path, scheme, query)

    @contextlib.contextmanager
    def _asking(self, action: str):
        """pyarrow's faults as errors that name this URI: FileNotFoundError for an absent object, else
        StoreError (pyarrow's own text names only a bucket and key, or nothing)."""
        try:
            yield
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, "no such file or folder", str(self)) from None
        except StoreError:
            raise
        except OSError as err:
            raise StoreError(err.errno, f"{action} failed ({fault_detail(err)})", str(self)) from None

    # --- names ------------------------------------------------------------------------------------
    def __str__(self) -> str:
        return f"{self.scheme}://{urllib.parse.quote(self.path, safe=URI_PATH_SAFE)}{self.query}"

    def __repr__(self) -> str:
        return f"StorePath({str(self)!r})"

    def __eq__(self, other) -> bool:
        """The same object or folder: one kind of store and one path (however its URI was written)."""
        return isinstance(other, StorePath) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[str, str]:
        return self.filesystem.type_name, self.path

    def __truediv__(self, name: str) -> "StorePath":
        return StorePath(self.filesystem, f"{self.path}/{str(name).strip('/')}", self.scheme, self.query)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> "StorePath":
        return StorePath(self.filesystem, self.path.rsplit("/", 1)[0] if "/" in self.path else self.path,
                         self.scheme, self.query)

    def resolve(self) -> "StorePath":
        return self

    expanduser = absolute = resolve

    # --- looking ----------------------------------------------------------------------------------
    def info(self) -> pafs.FileInfo:
        if self._known is not None:
            return self._known
        with self._asking("looking it up"):
            return self.filesystem.get_file_info(self.path)

    def stat(self) -> StoreStat:
        info = self.info()
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(2, "no such file or folder", str(self))
        mode = stat.S_IFDIR if info.type == pafs.FileType.Directory else stat.S_IFREG
        mtime = info.mtime_ns or 0
        return StoreStat(mode, info.size or 0, mtime)

    lstat = stat

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def is_symlink(self) -> bool:
        return False

    def iterdir(self) -> list["StorePath"]:
        """The folder's entries (one listing); FileNotFoundError when there is no such folder."""
        with self._asking("listing it"):
            entries = self.filesystem.get_file_info(pafs.FileSelector(self.path, allow_not_found=False))
        return [StorePath(self.filesystem, info.path, self.scheme, self.query, known=info) for info in entries]

    def glob(self, pattern: str) -> list["StorePath"]:
        """Entries of this folder whose name matches `pattern` (one level: no '/' in it)."""
        try:
            return [entry for entry in self.iterdir() if fnmatch.fnmatchcase(entry.name, pattern)]
        except FileNotFoundError:
            return []

    def files_below(self) -> list[pafs.FileInfo]:
        """Every file under this folder, with its size and time (one listing, however deep)."""
        selector = pafs.FileSelector(self.path, recursive=True, allow_not_found=True)
        with self._asking("listing it"):
            found = self.filesystem.get_file_info(selector)
        return [info for info in found if info.type == pafs.FileType.File]

    # --- reading and writing ------------------------------------------------------------------------
    def read_bytes(self) -> bytes:
        if self._known is None and self.info().type == pafs.FileType.Directory:
            raise IsADirectoryError(21, "a folder, not a file", str(self))
        with self._asking("reading it"), self.filesystem.open_input_stream(self.path) as stream:
            return stream.read()

    def read_text(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self.read_bytes().decode(encoding, errors)

    def write_bytes(self, data: bytes) -> None:
        """The object is replaced whole when the stream closes: a reader never sees half of it."""
        with self._asking("writing it"), self.filesystem.open_output_stream(self.path) as stream:
            stream.write(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        with self._asking("creating it"):
            self.filesystem.create_dir(self.path, recursive=parents)

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            with self._asking("deleting it"):
                self.filesystem.delete_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def open_record(self) -> tuple[io.BufferedReader, StoreStat] | None:
        """Like `results.reader.open_record`: None when absent; the object is fetched on the first read, so
        a caller that only needs the `stat` (an unchanged, cached file) costs one request."""
        looked = StorePath(self.filesystem, self.path, self.scheme, self.query, known=self.info())
        if looked.info().type == pafs.FileType.NotFound:
            return None
        return io.BufferedReader(_Fetched(looked)), looked.stat()  # neither asks the store again


class _Fetched(io.RawIOBase):
    """An object's bytes, fetched whole on the first read."""

    def __init__(self, where: StorePath):
        self.where, self.data, self.offset = where, None, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.data is None:
            self.data = self.where.read_bytes()
        chunk = self.data[self.offset:self.offset + len(buffer)]
        buffer[:len(chunk)] = chunk
        self.offset += len(chunk)
        return len(chunk)


Location = Path | StorePath


def location(path: str | Path | StorePath) -> Location:
    """A local path (with `~` expanded) or, for a URI, a `StorePath`."""
    if isinstance(path, (Path, StorePath)):
        return path
    return StorePath.from_uri(path) if is_uri(path) else Path(path).expanduser()


def on_filesystem(filesystem: pafs.FileSystem, path: str) -> Location:
    """The location of `path` on a pyarrow filesystem (Ray Tune's storage context gives both)."""
    if isinstance(filesystem, pafs.LocalFileSystem):
        return Path(path)
    return StorePath(filesystem, path, {"gcs": "gs"}.get(filesystem.type_name, filesystem.type_name))


def join(root: str, name: str) -> str:
    """`root/name` for a folder or a URI: `name` is one plain segment, escaped in a URI as `StorePath`
    writes it (a URI's query stays at its end)."""
    if not is_uri(root):
        return root.rstrip("/") + "/" + name
    base, query = (root.split("?", 1) + [""])[:2]
    return base.rstrip("/") + "/" + urllib.parse.quote(name, safe=URI_PATH_SAFE) + ("?" + query if query else "")


def local_outputs(folder: Location) -> Path:
    """Where a command writes files it makes from an experiment by default: inside a local experiment
    folder; for one in an object store, a folder of its name in the current directory."""
    return folder if isinstance(folder, Path) else Path.cwd() / folder.name


def write_record(path: Location, text: str) -> None:
    """Replace a small record whole: an atomic rename locally, one object write in a store."""
    if isinstance(path, StorePath):
        path.write_text(text)
    else:
        atomic_write(path, lambda tmp: tmp.write_text(text))
