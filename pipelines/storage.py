"""Object storage for the pipeline: URLs (s3://, gs://, az://, http(s)://) as paths, the fsspec file systems and zarr
stores behind them (standard credentials plus --storage-options), and storage failures as one line without secrets.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from napari_resshift.errors import ResShiftError, first_line
from napari_resshift.reading import ZARR_DOCUMENTS

# URL scheme -> fsspec protocol, and the package that provides it
PROTOCOLS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "abfs", "abfs": "abfs", "abfss": "abfs",
             "http": "http", "https": "https"}
PACKAGES = {"s3": "s3fs", "gcs": "gcsfs", "abfs": "adlfs"}
# a failure is said within seconds, and a dropped connection is retried before it stops a run
DEFAULTS = {"s3": {"config_kwargs": {"connect_timeout": 10, "read_timeout": 60,
                                     "retries": {"max_attempts": 4, "mode": "standard"}}}}
TIFF_BLOCK = 1 << 18  # bytes per range request of a TIFF: a few tiles or strips, never the whole file
TIFF_BLOCKS_KEPT = 64  # blocks cached per open TIFF (16 MiB): the IFDs and a block's tiles stay while it is read
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY",
              "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CONNECTION_STRING",
              "AZURE_CLIENT_SECRET", "GOOGLE_APPLICATION_CREDENTIALS")
SECRET_KEYS = re.compile(r"key|secret|token|password|passwd|credential|sas|sig|auth|connection", re.IGNORECASE)
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def is_url(value) -> bool:
    return isinstance(value, RemotePath) or (isinstance(value, str) and bool(_URL.match(value)))


@dataclass(frozen=True)
class Options:
    """--storage-options as hashable, picklable data whose repr shows no values: tasks carry it to the workers.
    Either one dict for every URL, or one per scheme (``{"s3": {...}, "https": {...}}``)."""

    text: str = "{}"

    def __repr__(self) -> str:
        return f"Options({len(json.loads(self.text))} keys)"

    def of(self, protocol: str) -> dict:
        given = json.loads(self.text)
        if given and all(k in PROTOCOLS for k in given):
            given = next((v for k, v in given.items() if PROTOCOLS[k] == protocol), {})
        merged = dict(DEFAULTS.get(protocol, {}))
        for key, value in given.items():  # one level deep, so that config_kwargs keeps its timeouts
            merged[key] = merged[key] | value if isinstance(merged.get(key), dict) and isinstance(value, dict) else value
        return merged


def parse_options(text: str | None) -> Options:
    """--storage-options JSON, checked; its secret values are scrubbed from every message from here on."""
    if not text:
        return Options()
    try:
        given = json.loads(text)
    except ValueError as exc:
        raise ResShiftError(f"--storage-options is not JSON ({exc.msg} at character {exc.pos}); pass e.g. "
                            "'{\"anon\": true}' or '{\"endpoint_url\": \"http://host:9000\"}'") from None
    if not isinstance(given, dict):
        raise ResShiftError("--storage-options must be a JSON object, e.g. '{\"anon\": true}'")
    _remember_secrets(given)
    return Options(json.dumps(given, sort_keys=True))


_SECRETS: set[str] = set()


def _remember_secrets(options, key: str = "") -> None:
    if isinstance(options, dict):
        for k, v in options.items():
            _remember_secrets(v, f"{key}.{k}")
    elif isinstance(options, str) and SECRET_KEYS.search(key) and len(options) >= 4:
        _SECRETS.add(options)


def scrub(text: str) -> str:
    """``text`` without any credential this process knows: the environment's, --storage-options', URLs' own."""
    secrets = _SECRETS | {os.environ[k] for k in SECRET_ENV if len(os.environ.get(k, "")) >= 4}
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return re.sub(r"(\w+://)[^/@\s]+@", r"\1***@", text)  # user:password@ of any URL


def redact(url: str) -> str:
    """The URL as shown and recorded: no user or password, no query (pre-signed URLs and SAS tokens live there)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "***" if parts.query else "", ""))


class RemotePath:
    """A URL with the part of ``pathlib.Path``'s interface that the pipeline uses for its inputs and outputs.
    ``str()`` is the redacted URL, so that messages and records never carry credentials; ``url`` is the real one."""

    def __init__(self, url: str, options: Options = Options()):
        scheme = _URL.match(url).group(1).lower()
        if scheme not in PROTOCOLS:
            raise ResShiftError(f"{redact(url)}: {scheme}:// is not supported; use a local path or an s3://, gs://, "
                                "az://, http:// or https:// URL")
        self.url = url.rstrip("/") if url.count("/") > 3 else url
        self.options = options
        self.protocol = PROTOCOLS[scheme]

    def __str__(self) -> str:
        return redact(self.url)

    def __format__(self, spec: str) -> str:  # f-strings show the redacted URL too
        return format(str(self), spec)

    def __lt__(self, other: RemotePath) -> bool:
        return self.url < other.url

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and self.url == other.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __truediv__(self, name: str) -> RemotePath:
        return RemotePath(f"{self.url}/{name}", self.options)

    @property
    def name(self) -> str:
        return urlsplit(self.url).path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        name = self.name
        return name[name.rindex("."):] if "." in name.strip(".") else ""

    @property
    def parent(self) -> RemotePath:
        head = self.url.rsplit("/", 1)[0]
        return RemotePath(head if head.count("/") >= 2 and not head.endswith(":/") else self.url, self.options)

    @property
    def parents(self) -> list[RemotePath]:
        found, path = [], self
        while path.parent != path:
            path = path.parent
            found.append(path)
        return found

    def with_name(self, name: str) -> RemotePath:
        return RemotePath(f"{self.url.rsplit('/', 1)[0]}/{name}", self.options)

    def resolve(self) -> RemotePath:
        return self

    @property
    def fs(self):
        return filesystem(self.protocol, self.options)

    @property
    def key(self) -> str:
        """The path as the file system names it (bucket/key for object stores, the whole URL over HTTP)."""
        return self.url if self.protocol in ("http", "https") else self.fs._strip_protocol(self.url)

    def _fresh(self):
        fs = self.fs
        fs.invalidate_cache()  # other processes (workers, an earlier run) write here: listings go stale
        return fs

    def exists(self) -> bool:
        with storage_errors(self):
            fs = self._fresh()
            if self.protocol not in ("http", "https"):
                return fs.exists(self.key)
            return _http_exists(fs, self.url) or self.is_dir()

    def is_dir(self) -> bool:
        """A folder: a listed prefix in an object store; over HTTP, which lists nothing, a zarr's metadata."""
        with storage_errors(self):
            fs = self._fresh()
            if self.protocol in ("http", "https"):
                return any(_http_exists(fs, f"{self.url}/{m}") for m in ZARR_DOCUMENTS)
            return fs.isdir(self.key)

    def is_file(self) -> bool:
        with storage_errors(self):
            return self._fresh().isfile(self.key)

    def iterdir(self) -> list[RemotePath]:
        with storage_errors(self):
            return [RemotePath(f"{self.url}/{p.rstrip('/').rsplit('/', 1)[-1]}", self.options)
                    for p in self._fresh().ls(self.key, detail=False)]

    def mkdir(self, *, parents: bool = False, exist_ok: bool = False) -> None:
        """Object stores have no folders: a prefix exists once something is written under it."""

    def touch(self) -> None:
        with storage_errors(self):
            self.fs.pipe_file(self.key, b"")

    def stat(self):
        """Size and modification time as ``os.stat`` names them (0 where the server gives none, as over HTTP)."""
        import types

        with storage_errors(self):
            info = self._fresh().info(self.key)
        modified = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
        mtime = int(modified.timestamp() * 1e9) if hasattr(modified, "timestamp") else 0
        return types.SimpleNamespace(st_size=int(info.get("size") or 0), st_mtime_ns=mtime)

    def open(self, mode: str = "rb"):
        if mode != "rb":
            raise ValueError(f"{self}: only read here, never written as a file")
        return open_file(self)


def missing(location: RemotePath) -> str:
    """Why a URL names nothing: its bucket does not exist, or nothing is stored under it."""
    if location.protocol not in ("http", "https"):
        bucket = location.key.split("/", 1)[0]
        with storage_errors(location):
            if not location.fs.exists(bucket):
                return f"{location}: the bucket {bucket!r} does not exist (or is not visible with these credentials)" \
                       "; correct the URL or create it"
    return f"{location}: nothing is stored there; check the URL"


def _http_exists(fs, url: str) -> bool:
    """A HEAD request: fsspec's own exists() over HTTP GETs the whole file, and calls an unreachable server empty."""
    try:
        fs.info(url)
        return True
    except FileNotFoundError as exc:
        if any(type(e).__name__ in UNREACHABLE for e in _chain(exc)):
            raise
        return False


def unlisted(value) -> bool:
    """Whether ``value`` is a URL whose server lists nothing (HTTP): what is stored there cannot be counted."""
    return is_url(value) and path(value).protocol in ("http", "https")


def path(value, options: Options = Options()):
    """A ``RemotePath`` for a URL, else a ``pathlib.Path``: what the pipeline passes around as a location."""
    from pathlib import Path

    if isinstance(value, RemotePath) or value is None:
        return value
    return RemotePath(str(value), options) if is_url(str(value)) else Path(value)


@functools.lru_cache(maxsize=16)
def filesystem(protocol: str, options: Options):
    """The fsspec file system of ``protocol``: credentials and endpoints from the environment and profiles as its
    library reads them (AWS_ENDPOINT_URL, AWS_PROFILE, ...), then --storage-options."""
    import fsspec

    try:
        return fsspec.filesystem(protocol, **options.of(protocol))
    except ImportError:
        raise ResShiftError(f"{protocol}:// needs the {PACKAGES.get(protocol, 'aiohttp')} package; pip install "
                            f"{PACKAGES.get(protocol, 'aiohttp')} (on every worker too)") from None
    except TypeError as exc:
        raise ResShiftError(f"--storage-options: {scrub(first_line(exc))}; pass options that {protocol}:// takes")


def zarr_store(location, *, read_only: bool):
    """What zarr opens: the path itself on a local disk, an ``FsspecStore`` over the URL's file system else."""
    if not isinstance(location, RemotePath):
        return str(location)
    from zarr.storage import FsspecStore

    with storage_errors(location):
        return FsspecStore.from_url(location.url, storage_options=location.options.of(location.protocol),
                                    read_only=read_only)


def open_file(location: RemotePath):
    """A seekable file over range requests, with a block cache: tifffile then fetches only the IFDs and the tiles
    or strips that are read, never the whole file."""
    with storage_errors(location):
        return location.fs.open(location.key, "rb", block_size=TIFF_BLOCK, cache_type="blockcache",
                                cache_options={"maxblocks": TIFF_BLOCKS_KEPT})


def check_writable(location: RemotePath) -> None:
    """Refuse, before anything is written, an output URL that cannot take the output: a web server, a bucket that
    does not exist or does not let these credentials write (a probe object beside the output, removed again)."""
    if location.protocol in ("http", "https"):
        raise ResShiftError(f"{location}: a web server cannot be written to; write the output to object storage "
                            "(s3://, gs://, az://) or to a local path")
    bucket = location.key.split("/", 1)[0]
    if "/" not in location.key.strip("/"):
        raise ResShiftError(f"{location}: names a bucket, not an output in it; add a name, e.g. {location}/out.ome.zarr")
    with storage_errors(location):
        fs = location._fresh()
        if not fs.exists(bucket):
            raise ResShiftError(f"{location}: the bucket {bucket!r} does not exist (or is not visible with these "
                                "credentials); create it first or correct the URL")
        probe = location.key + ".resshift-write-probe"
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)


def remove_tree(location, *, missing_ok: bool = False) -> None:
    """An output of ours removed: a local folder, or every object under the URL's prefix."""
    if not isinstance(location, RemotePath):
        import shutil

        shutil.rmtree(location, ignore_errors=missing_ok)
        return
    with storage_errors(location):
        fs = location._fresh()
        if fs.exists(location.key):
            fs.rm(location.key, recursive=True)
        fs.invalidate_cache()


def glob(pattern: RemotePath) -> list[RemotePath]:
    """The objects and prefixes that a URL with wildcards names, sorted (an object store lists; HTTP cannot)."""
    if pattern.protocol in ("http", "https"):
        raise ResShiftError(f"{pattern}: a web server cannot be listed; pass each URL on its own")
    with storage_errors(pattern):
        found = pattern._fresh().glob(pattern.key)
    scheme = pattern.url.split("://", 1)[0]
    return [RemotePath(f"{scheme}://{p}", pattern.options) for p in sorted(found)]


# -- failures ---------------------------------------------------------------------------------------------------------

def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return str((response or {}).get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


CREDENTIALS = ("check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) or the credentials in "
               "--storage-options")


STORAGE_CODE = ("s3fs", "gcsfs", "adlfs", "fsspec", "aiobotocore", "botocore", "aiohttp", "zarr/storage/_fsspec")


def _raised_by_storage(exc: BaseException) -> bool:
    """Whether a plain OSError came from the storage libraries, not from a local file (a model, a folder)."""
    tb = exc.__traceback__
    while tb is not None:
        if any(part in tb.tb_frame.f_code.co_filename for part in STORAGE_CODE):
            return True
        tb = tb.tb_next
    return False


def explain(exc: BaseException, where) -> str | None:
    """``where: problem; what to do`` for a failure of object storage anywhere in ``exc``'s chain, else None. The
    cause that says most wins: a refused connection hides behind fsspec's 'not found' over HTTP."""
    chain = [e for e in _chain(exc) if _code(e) or _raised_by_storage(e) or
             not isinstance(e, (FileNotFoundError, PermissionError, TimeoutError))]
    names, codes = {type(e).__name__ for e in chain}, {_code(e) for e in chain}

    def first(kinds: set[str]) -> BaseException:
        return next(e for e in chain if type(e).__name__ in kinds)

    refused = any(text in str(e).lower() for e in chain for text in CREDENTIAL_TEXTS)  # s3fs may drop the code
    if codes & CREDENTIAL_CODES or refused:
        return f"{where}: the storage refused the credentials (unknown key or wrong secret); {CREDENTIALS}"
    if names & NO_CREDENTIALS:
        return (f"{where}: no credentials found for the storage; {CREDENTIALS}, or --storage-options "
                "'{\"anon\": true}' for a public bucket")
    if names & UNREACHABLE:
        return (f"{where}: cannot reach the storage endpoint ({scrub(first_line(first(UNREACHABLE)))}); check the "
                "URL, AWS_ENDPOINT_URL (or endpoint_url in --storage-options) and the network (an unfinished output is "
                "finished by --resume)")
    if names & DROPPED:
        return (f"{where}: the connection to the storage dropped ({min(names & DROPPED)}); the output stays "
                "unfinished: rerun with --resume once the storage is reachable")
    if "NoSuchBucket" in codes or any(isinstance(e, FileNotFoundError) and "bucket" in str(e).lower() for e in chain):
        bucket = urlsplit(where.url if isinstance(where, RemotePath) else str(where)).netloc.rsplit("@", 1)[-1]
        return f"{where}: the bucket {bucket!r} does not exist; create it or correct the URL"
    if codes & {"AccessDenied", "AllAccessDisabled", "AccountProblem", "403"} or \
            any(isinstance(e, PermissionError) for e in chain):
        return (f"{where}: access denied by the storage; {CREDENTIALS}, and that they may read the input and "
                "write the output")
    if codes & {"NoSuchKey", "404"} or any(isinstance(e, FileNotFoundError) for e in chain):
        return f"{where}: nothing is stored there; check the URL"
    missing = [e for e in chain if isinstance(e, ImportError) and any(p in str(e) for p in PACKAGES.values())]
    if missing:
        return f"{where}: {first_line(missing[0])} (on every worker too)"
    return None


CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                    "InvalidClientTokenId", "AuthorizationHeaderMalformed"}
CREDENTIAL_TEXTS = ("access key id you provided does not exist", "signature we calculated does not match",
                    "security token included in the request is invalid", "token has expired",
                    "provided token has expired")
NO_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}
UNREACHABLE = {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "ConnectionRefusedError",
               "ClientConnectorDNSError", "gaierror", "NewConnectionError"}
DROPPED = {"ServerDisconnectedError", "ClientPayloadError", "ReadTimeoutError", "IncompleteRead",
           "ConnectionResetError", "ClientOSError", "ResponseStreamingError", "FSTimeoutError", "TimeoutError",
           "ConnectionClosedError"}


@contextlib.contextmanager
def storage_errors(where):
    """Inside the block, a failure of object storage is one ``ResShiftError`` line naming ``where``."""
    try:
        yield
    except (ResShiftError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - botocore, aiohttp and fsspec fail in many ways for a few user problems
        said = explain(exc, where)
        if said is None:
            raise
        raise ResShiftError(scrub(said)) from None


def one_line(exc: BaseException, where) -> BaseException:
    """The error to show for ``exc`` of a run on ``where``: a storage failure anywhere in its chain in its own
    words (naming the location the message named, else ``where``), any message scrubbed of credentials."""
    if isinstance(exc, ResShiftError) and is_url(str(exc).split(": ", 1)[0]):
        where = str(exc).split(": ", 1)[0]
    said = explain(exc, where) if is_url(where) else None
    if said is not None:
        return ResShiftError(scrub(said))
    if isinstance(exc, ResShiftError):
        return ResShiftError(scrub(str(exc)))
    return exc
