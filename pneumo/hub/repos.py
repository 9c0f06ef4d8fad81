"""pneumo's model repos on the Hugging Face Hub: model references (`OWNER/NAME` or `OWNER/NAME@REVISION`),
downloading them (`resolve_model_folder`) and publishing a model folder (`push`). Publishing the demo as a
Gradio Space is pneumo.hub.space; `pneumo hub` does all three.

Downloads go through `huggingface_hub` into its standard cache (HF_HOME / HF_HUB_CACHE are respected),
so a revision pulled once loads offline (HF_HUB_OFFLINE=1) afterwards. Uploads go through `HfApi`, which
sends large files through LFS/Xet as the Hub requires (a `git push` of this repository would not).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

from ..errors import HubUnavailableError, ModelLoadError, ModelNotFoundError, PneumoError
from .model_folder import (
    CARD_FILE,
    CONFIG_FILE,
    DOWNLOADED_FILES,
    LEGACY_CONFIG_FILE,
    PUBLISHED_FILES,
    files_to_publish,
)
from .model_card import render_model_card, write_model_card

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
# A reference that starts like this is a path on this machine, never a Hub repo.
_PATH_STARTS = ("./", "../", "/", "~", ".\\", "..\\")


def is_hub_reference(reference: str) -> bool:
    """Whether `reference` is read as a Hub repo `OWNER/NAME[@REVISION]` rather than a folder on this machine."""
    return bool(_REPO_ID.match(reference)) and not is_local_path(reference)


def is_local_path(reference: str) -> bool:
    """Whether `reference` means a folder on this machine, existing or not: it exists; it starts with ./, ../, /
    or ~; it has more than one / (before any @REVISION); or its first part is a local folder of model folders
    (models/cnn-lsm, a typo of models/cnn-lstm, is a missing folder, not a Hub repo named cnn-lsm).

    A first part that is some other local folder (pneumo/, the package) may still be a Hub owner."""
    if reference.startswith(_PATH_STARTS) or Path(reference).exists():
        return True
    repo_id = reference.partition("@")[0]
    if repo_id.count("/") > 1:
        return True
    owner, slash, _ = repo_id.partition("/")
    return bool(slash) and holds_model_folders(Path(owner))


def holds_model_folders(folder: Path) -> bool:
    """Whether `folder` is a local folder with a model folder (a pneumo.json, or a legacy config.json) in it."""
    try:
        return any((child / CONFIG_FILE).is_file() or (child / LEGACY_CONFIG_FILE).is_file()
                   for child in folder.iterdir() if child.is_dir())
    except OSError:
        return False


def split_reference(reference: str, revision: str | None = None) -> tuple[str, str | None]:
    repo_id, _, pinned = reference.partition("@")
    return repo_id, revision or pinned or None


def _transport_errors() -> tuple:
    """The HTTP client's network errors (a dropped connection, a reset), whichever client the Hub library uses."""
    try:
        import httpx2

        return (httpx2.TransportError,)
    except ImportError:  # older huggingface_hub releases use httpx or requests
        return ()


def resolve_model_folder(reference: str, revision: str | None = None) -> tuple[Path, str]:
    """Download (or find in the cache) the model files of a Hub repo; returns (folder, commit hash)."""
    from huggingface_hub import errors as hub_errors
    from huggingface_hub import snapshot_download

    repo_id, revision = split_reference(reference, revision)
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=DOWNLOADED_FILES))
    except hub_errors.HFValidationError as error:
        raise ModelNotFoundError(f"{repo_id}: not a Hub repo id OWNER/NAME[@REVISION] ({error})") from None
    except hub_errors.RevisionNotFoundError:
        raise ModelNotFoundError(f"{repo_id}: revision {revision!r} does not exist on the Hub") from None
    except hub_errors.GatedRepoError:
        raise ModelLoadError(f"{repo_id}: gated repo; accept its terms on the Hub and set HF_TOKEN") from None
    except hub_errors.RepositoryNotFoundError:
        raise ModelNotFoundError(
            f"{repo_id}: no such model repo on the Hub, or it is private and HF_TOKEN is missing or wrong") from None
    except hub_errors.LocalEntryNotFoundError as error:
        cause = error.__cause__
        if isinstance(cause, hub_errors.HfHubHTTPError) and getattr(cause.response, "status_code", None) in (401, 403):
            raise ModelLoadError(f"{repo_id}: the Hub rejected the credentials; check HF_TOKEN") from None
        raise HubUnavailableError(
            f"{repo_id}@{revision or 'main'}: the Hub cannot be reached and this revision is not in the local "
            "cache; connect once to download it (or unset HF_HUB_OFFLINE), or use a bundled model folder") from None
    except hub_errors.HfHubHTTPError as error:
        if getattr(error.response, "status_code", None) in (401, 403):
            raise ModelLoadError(f"{repo_id}: the Hub rejected the credentials; check HF_TOKEN") from None
        raise HubUnavailableError(f"{repo_id}: download failed ({error})") from None
    except (OSError, *_transport_errors()) as error:
        raise HubUnavailableError(f"{repo_id}: download failed ({type(error).__name__}: {error})") from None
    # The snapshot folder is named after the commit it holds: an immutable record of what was loaded.
    return folder, folder.name


def existing_tag_commit(api, repo_id: str, tag: str) -> str | None:
    """The commit a tag of the repo points at, None when there is no such tag (or no such repo yet)."""
    from huggingface_hub import errors as hub_errors

    try:
        refs = api.list_repo_refs(repo_id, repo_type="model")
    except hub_errors.RepositoryNotFoundError:
        return None
    return next((ref.target_commit for ref in refs.tags if ref.name == tag), None)


@contextmanager
def upload_errors(repo_id: str, refused_error: type[PneumoError]):
    """Turn the Hub client's failures during an upload into one-line pneumo errors: credentials the Hub
    refuses (401/403) raise `refused_error`; any other HTTP error, or no connection, HubUnavailableError."""
    from huggingface_hub import errors as hub_errors

    try:
        yield
    except hub_errors.HfHubHTTPError as error:  # before OSError, which it also is
        status = getattr(error.response, "status_code", None)
        if status in (401, 403):
            raise refused_error(f"{repo_id}: the Hub refused the upload ({status}); set HF_TOKEN to a token "
                                "with write access to this namespace") from None
        raise HubUnavailableError(f"{repo_id}: upload failed ({_one_line(error)})") from None
    except (OSError, *_transport_errors()) as error:
        raise HubUnavailableError(f"{repo_id}: the Hub cannot be reached ({type(error).__name__}: "
                                  f"{_one_line(error)})") from None


def _one_line(error: Exception) -> str:
    """The Hub's error messages span lines (status, request id, server message); a CLI error is one line."""
    return " ".join(str(error).split())


def push(folder, repo_id: str, *, private: bool = False, revision_tag: str | None = None, move_tag: bool = False,
         dry_run: bool = False, api=None) -> dict:
    """Create the Hub repo if needed and upload the model folder (with a freshly written model card).

    Files of an earlier upload that the folder no longer has are deleted from the repo in the same commit.
    An existing `revision_tag` is refused unless `move_tag`, which moves it to the new commit.
    Returns what was (or, with `dry_run`, would be) uploaded, and the commit it made; a dry run writes
    nothing, not even the model card.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    files = files_to_publish(folder)  # refuse an incomplete folder before touching the card or the network
    card = render_model_card(folder)
    names = sorted({path.name for path in files} | {CARD_FILE})
    sizes = {path.name: path.stat().st_size for path in files} | {CARD_FILE: len(card.encode())}
    plan = {"repo_id": repo_id, "private": private, "revision_tag": revision_tag,
            "files": [{"name": name, "bytes": sizes[name]} for name in names]}
    if dry_run:
        return plan
    api = api or HfApi()
    with upload_errors(repo_id, ModelLoadError):
        tagged = existing_tag_commit(api, repo_id, revision_tag) if revision_tag else None
        if tagged and not move_tag:
            raise ModelLoadError(f"{repo_id}: tag {revision_tag!r} already points at commit {tagged}; choose a new "
                                 "tag, or pass --move-tag to move it to this upload")
        write_model_card(folder)
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", allow_patterns=names,
                                   delete_patterns=PUBLISHED_FILES,
                                   commit_message=f"Upload pneumo model {folder.name}")
        if revision_tag:
            if tagged:
                api.delete_tag(repo_id, tag=revision_tag, repo_type="model")
            api.create_tag(repo_id, tag=revision_tag, revision=commit.oid, repo_type="model")
    return {**plan, "commit": commit.oid}
