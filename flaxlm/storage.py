"""Files that may live on local disk or in a Cloud Storage bucket (`gs://bucket/path`).

Every read or write of a workdir file, a data file, a tokenizer or an import/export directory goes
through here, so a path is a path whether it is local or `gs://`. Remote paths use `etils.epath`
(orbax's own path library) on `gcsfs`; local paths keep plain `os` calls where atomicity matters
(write-then-rename). Orbax writes checkpoints to the bucket itself (tensorstore).

Emulators: `STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT` (the variable Google's own clients read)
is enough to point flaxlm at a local Cloud Storage emulator; `configure` translates it for the
clients that read other variables. tf.io.gfile (tf.data's TFRecord reader) has no endpoint
setting at all: see docs/scaling.md.
"""

from __future__ import annotations

import atexit
import contextlib
import glob as glob_lib
import io
import os
import shutil
import tempfile
from typing import IO, Iterator

from flaxlm.errors import STAND_INS, FlaxlmError

REMOTE_PREFIXES = ("gs://", )


def configure() -> None:
    """Sets the environment the storage clients read; idempotent, never overrides a user's value.

    epath picks tf.io.gfile for `gs://` whenever TensorFlow is installed; `EPATH_USE_TF=false`
    makes epath (ours and orbax's) use gcsfs instead, which honors `STORAGE_EMULATOR_HOST`, so the
    code that runs against an emulator is the code that runs against a real bucket.
    """
    os.environ.setdefault("EPATH_USE_TF", "false")
    import fsspec.config
    gcs = fsspec.config.conf.setdefault("gcs", {})
    # gcsfs caches directory listings per process; other processes (the other hosts, orbax's
    # tensorstore writes) add checkpoints behind its back, so a cached listing hides them.
    gcs.setdefault("use_listings_cache", False)
    host = os.environ.get("STORAGE_EMULATOR_HOST", "")
    if not host:
        return
    url = host if "://" in host else f"http://{host}"
    for key, value in {
            "TENSORSTORE_GCS_HTTP_URL": url,  # tensorstore (orbax's array writer)
            # Emulators take any token; this one keeps tensorstore off the metadata server.
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
            "NO_GCE_CHECK": "true",  # google-auth and gcsfs: no probe of a GCE metadata server
            # gcsfs's zonal-bucket probe speaks gRPC to the real control plane (a minute of retries).
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }.items():
        os.environ.setdefault(key, value)
    gcs.setdefault("token", "anon")


def is_remote(path: str) -> bool:
    return str(path).startswith(REMOTE_PREFIXES)


def epath_of(path: str):
    """The `etils.epath.Path` for `path`; a missing gcsfs is one line saying what to install."""
    from etils import epath
    if is_remote(path):
        try:
            import gcsfs  # noqa: F401
        except ImportError:
            raise FlaxlmError(f"{path}: gs:// paths need the gcsfs package: pip install "
                              "gcsfs") from None
    return epath.Path(path)


def exists(path: str) -> bool:
    return epath_of(path).exists() if is_remote(path) else os.path.exists(path)


def isfile(path: str) -> bool:
    return epath_of(path).is_file() if is_remote(path) else os.path.isfile(path)


def isdir(path: str) -> bool:
    return epath_of(path).is_dir() if is_remote(path) else os.path.isdir(path)


def listdir(path: str) -> list[str]:
    if is_remote(path):
        return sorted(p.name for p in epath_of(path).iterdir())
    return os.listdir(path)


def makedirs(path: str) -> None:
    """Local directories are created; a bucket has no directories to create."""
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)


def open_file(path: str, mode: str = "r") -> IO:
    """Text modes read and write UTF-8. Remote files cannot be appended to (objects are
    immutable): mode "a" is refused rather than silently overwriting."""
    if is_remote(path):
        if "a" in mode:
            raise ValueError(f"{path}: Cloud Storage objects cannot be appended to")
        binary = epath_of(path).open(mode.replace("t", "").replace("b", "") + "b")
        return binary if "b" in mode else io.TextIOWrapper(binary, encoding="utf-8")
    return open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"}))


def read_text(path: str) -> str:
    with open_file(path) as f:
        return f.read()


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str, data: bytes) -> None:
    """Readers never see a half-written file: a local file is written aside and renamed; an
    object upload becomes visible only once complete."""
    if is_remote(path):
        with open_file(path, "wb") as f:
            f.write(data)
        return
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def remove(path: str) -> None:
    if is_remote(path):
        epath_of(path).unlink()
    else:
        os.remove(path)


def rmtree(path: str) -> None:
    if is_remote(path):
        epath_of(path).rmtree()
    else:
        shutil.rmtree(path)


def rename(src: str, dst: str) -> None:
    """Local renames are atomic; in a bucket a rename copies then deletes, object by object."""
    if is_remote(src) or is_remote(dst):
        epath_of(src).rename(epath_of(dst))
    else:
        os.rename(src, dst)


def glob(pattern: str) -> list[str]:
    """Files matching `pattern` (`**` spans directories), sorted."""
    if not is_remote(pattern):
        return sorted(p for p in glob_lib.glob(pattern, recursive=True) if os.path.isfile(p))
    epath_of(pattern)  # gcsfs is installed
    import fsspec
    # epath refuses `**` in a bucket; gcsfs (epath's own backend here) lists it in one request.
    gcs = fsspec.filesystem("gs")
    return sorted(f"gs://{p}" for p in gcs.glob(pattern) if gcs.isfile(p))


def copy_tree(src: str, dst: str) -> None:
    """Copies every file under `src` to the same place under `dst`, local or remote either side."""
    if not is_remote(src) and not is_remote(dst):
        shutil.copytree(src, dst, dirs_exist_ok=True)
        return
    for name in listdir(src):
        if name in ("", ".", ".."):
            # Object names are any strings: `dir/../x` lists as `..` and would land outside `dst`.
            raise FlaxlmError(f"{src}/{name}: not a plain file or directory name; refused")
        s, d = os.path.join(src, name), os.path.join(dst, name)
        if isdir(s):
            copy_tree(s, d)
        else:
            makedirs(dst)
            with open_file(s, "rb") as fin, open_file(d, "wb") as fout:
                shutil.copyfileobj(fin, fout)


def upload_files(local_dir: str, remote_dir: str, *, last: str) -> None:
    """The files of `local_dir` into `remote_dir`, file `last` after the others: a bucket has no
    directory rename, so readers that wait for `last` never see a partial directory."""
    for name in sorted(os.listdir(local_dir), key=lambda name: name == last):
        with open(os.path.join(local_dir, name),
                  "rb") as f, open_file(os.path.join(remote_dir, name), "wb") as out:
            shutil.copyfileobj(f, out)


def same_bytes(a: str, b: str) -> bool:
    with open_file(a, "rb") as fa, open_file(b, "rb") as fb:
        return fa.read() == fb.read()


# Remote directory (no trailing "/") → (its listing when downloaded, the local copy).
_DOWNLOADS: dict[str, tuple[tuple, str]] = {}
# Every download directory made, with the id of the process that made it (see `_remove_downloads`).
_DOWNLOAD_DIRS: list[tuple[int, str]] = []
# Listings that change during a download are retried; a writer still at work after this many
# downloads is an error rather than a silently mixed copy.
_DOWNLOAD_TRIES = 3


def local_copy(path: str) -> str:
    """A local directory holding `path`'s files (the path itself when local): tokenizer and
    Hugging Face libraries read only local files. A remote directory is downloaded into a new
    temporary directory, removed when the process exits.

    Each call lists the remote directory (one request per thousand objects) and downloads again
    only when a name, size or content checksum differs from the copy already made: a directory
    rewritten in place (a tokenizer retrained into the same workdir) is never served stale, and an
    unchanged one (tokenizers are loaded several times per run, an XLM-R large import is 2 GB) is
    not downloaded twice. The listing is taken again after a download and the download repeated
    if it changed, so a copy never mixes files from before and after a rewrite. An older copy
    stays until exit, as a caller may still hold its path."""
    if not is_remote(path):
        return path
    epath_of(path)  # gcsfs is installed
    remote = path.rstrip("/")
    listing = _listing(remote)
    if not listing:
        raise FlaxlmError(f"{path}: no such directory (no files under it)")
    known, local = _DOWNLOADS.get(remote, ((), ""))
    if known == listing and os.path.isdir(local):  # (a tmp cleaner may have removed it)
        return local
    for _ in range(_DOWNLOAD_TRIES):
        local = _download(remote, listing)
        now = _listing(remote)
        if now == listing:
            break
        shutil.rmtree(local, ignore_errors=True)  # never handed out
        listing = now
    else:
        raise FlaxlmError(f"{path}: its files changed during each of {_DOWNLOAD_TRIES} downloads; "
                          "retry once whatever writes them has finished")
    _DOWNLOADS[remote] = (listing, local)
    STAND_INS[local] = path
    return local


def _listing(remote: str) -> tuple[tuple[str, int, str], ...]:
    """(name relative to `remote`, size, checksum) of each object under it. Checksums rather than
    generations: re-uploading the same bytes needs no new download. MD5 where the object has one
    (composite uploads have CRC32C only)."""
    import fsspec
    gcs = fsspec.filesystem("gs")
    root = remote[len("gs://"):]
    entries = []
    for name, info in gcs.find(root, detail=True).items():
        rel = name[len(root) + 1:]
        if name.startswith(root + "/") and rel and not rel.endswith("/"):  # not folder markers
            checksum = info.get("md5Hash") or info.get("crc32c") or str(info.get("generation"))
            entries.append((rel, int(info["size"]), checksum))
    return tuple(sorted(entries))


def _download(remote: str, listing: tuple[tuple[str, int, str], ...]) -> str:
    """The objects of `listing` in a new temporary directory, registered for removal at exit."""
    import fsspec
    gcs = fsspec.filesystem("gs")
    # realpath: messages built from a resolved path (symlink checks) still name the download.
    local = os.path.realpath(tempfile.mkdtemp(prefix="flaxlm-download-"))
    _DOWNLOAD_DIRS.append((os.getpid(), local))
    try:
        for rel, _, _ in listing:
            parts = rel.split("/")
            if any(part in ("", ".", "..") for part in parts):
                # An object name is any string; this one would be written outside the copy.
                raise FlaxlmError(f"{remote}/{rel}: an object name that is not a plain relative "
                                  "path; refused")
            target = os.path.join(local, *parts)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            gcs.get_file(f"{remote[len('gs://'):]}/{rel}", target)
    except BaseException:
        shutil.rmtree(local, ignore_errors=True)
        raise
    return local


@atexit.register
def _remove_downloads() -> None:
    """Removes this process's downloads at exit (a pod's boot disk is small and its jobs are
    relaunched after each preemption). Only directories this process made: a child forked after
    a download inherits this handler and the list, and must leave its parent's copies alone.
    Failures are ignored; nothing else is left to do at exit."""
    for pid, local in _DOWNLOAD_DIRS:
        if pid == os.getpid():
            shutil.rmtree(local, ignore_errors=True)


def recorded_name(path: str) -> str:
    """How a run's records name a source: a `gs://` path as given (also when read from its
    `local_copy`), a local one absolute."""
    if is_remote(path):
        return path
    path = os.path.abspath(path)
    for local, remote in STAND_INS.items():
        if path == local or path.startswith(local + os.sep):
            return remote.rstrip("/") + path[len(local):]
    return path


@contextlib.contextmanager
def local_output(path: str) -> Iterator[str]:
    """A local directory to write into; a remote `path` receives its files on success."""
    if not is_remote(path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=".flaxlm-upload-") as staging:
        STAND_INS[staging] = path
        yield staging
        copy_tree(staging, path)


configure()
