"""Where the Ray engine reads from: a local folder, or object storage (s3://, gs://, file:// URIs), through
pyarrow's filesystems. The files are listed here, on the machine that runs batch_eval.py, and read on the workers.

A worker reads with the filesystem this machine built, which travels to it with each task: its endpoint, region
and credentials are those set here (`open_storage`), so a worker node needs none of its own. The settings that
are not secret (a profile's name, a region, an endpoint) also reach the workers as environment variables
(`worker_environment`), for what a worker resolves itself, such as a profile on a node that has one. Secrets
travel only inside the filesystem object: never in Ray's runtime environment, which Ray shows and logs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from .scoring import ImageFile, discover, is_listed
from ..errors import DataFolderError

# Storage settings passed from this machine to the workers as they are (none of them a secret; docs/scale-out.md).
WORKER_SETTINGS = (
    "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE",
    "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT",
    "STORAGE_EMULATOR_HOST",
)
# The credentials that travel inside the filesystem object, where they are set here and the URI gives none.
S3_KEYS = {"access_key": "AWS_ACCESS_KEY_ID", "secret_key": "AWS_SECRET_ACCESS_KEY",
           "session_token": "AWS_SESSION_TOKEN"}


def is_uri(folder_or_uri) -> bool:
    return "://" in str(folder_or_uri)


def shown(folder_or_uri) -> str:
    """The folder or URI as messages and reports show it: without keys or a password written into the URI
    (s3://KEY:SECRET@bucket/...)."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", str(folder_or_uri), flags=re.IGNORECASE)


def worker_environment() -> dict[str, str]:
    """The storage settings set here that the workers get as environment variables (`WORKER_SETTINGS`)."""
    return {name: os.environ[name] for name in WORKER_SETTINGS if os.environ.get(name)}


def open_storage(uri: str):
    """(filesystem, path of `uri` on it), with every setting that pyarrow resolved here from this machine's
    environment written into the filesystem, so that a worker that unpickles it reads with them: S3's endpoint,
    the bucket's region, and the access keys set here (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN).
    pyarrow otherwise pickles an S3 filesystem without its region or keys, and each worker would look for its
    own."""
    from pyarrow import fs

    filesystem, root = fs.FileSystem.from_uri(uri)
    if isinstance(filesystem, fs.S3FileSystem):
        rebuild, (options,) = filesystem.__reduce__()  # every option of the filesystem, as pickling keeps them
        options["region"] = options["region"] or filesystem.region
        if not options["access_key"] and all(os.environ.get(S3_KEYS[key]) for key in ("access_key", "secret_key")):
            options.update({option: os.environ.get(name) or None for option, name in S3_KEYS.items()})
        filesystem = rebuild(options)
    return filesystem, root


def list_files(folder_or_uri, shard: tuple[int, int] = (0, 1)):
    """(filesystem, files, sizes): the files to score, as `pneumo.batch.scoring.discover` lists a local folder (same
    order, relative paths and shards), each `ImageFile.path` being its path on `filesystem`."""
    from pyarrow import fs

    if not is_uri(folder_or_uri):
        files = [ImageFile(Path(os.path.abspath(f.path)), f.relative) for f in discover(folder_or_uri, shard)]
        return fs.LocalFileSystem(), files, [f.path.stat().st_size for f in files]
    try:
        filesystem, root = open_storage(str(folder_or_uri))
        infos = filesystem.get_file_info(fs.FileSelector(root.rstrip("/"), recursive=True))
    except (OSError, ValueError) as error:
        raise DataFolderError(f"{shown(folder_or_uri)}: cannot list it ({error})") from None
    root = root.rstrip("/") + "/"
    listed = sorted((PurePosixPath(info.path[len(root):]), info) for info in infos
                    if info.type == fs.FileType.File and info.path.startswith(root))
    listed = [(relative, info) for relative, info in listed if is_listed(relative, shard)]
    return (filesystem, [ImageFile(Path(info.path), Path(relative)) for relative, info in listed],
            [info.size for _, info in listed])


def read_bytes(filesystem, path: str) -> bytes:
    """The whole file at `path` on `filesystem` (OSError when it cannot be read)."""
    # pyarrow.fs registers the exit hook that finalizes S3. A process that got `filesystem` by unpickling it (a Ray
    # task) has not imported it, and then may crash at exit ("FinalizeS3 was not called").
    import pyarrow.fs  # noqa: F401
    with filesystem.open_input_stream(path) as stream:
        return stream.read()
