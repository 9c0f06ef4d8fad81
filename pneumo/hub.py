"""Model references on the Hugging Face Hub: `OWNER/NAME` or `OWNER/NAME@REVISION`.

Downloads go through `huggingface_hub` into its standard cache (HF_HOME / HF_HUB_CACHE are respected),
so a revision pulled once loads offline (HF_HUB_OFFLINE=1) afterwards.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import HubUnavailableError, ModelLoadError, ModelNotFoundError
from .model_folder import DOWNLOADED_FILES, files_to_publish
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def is_hub_reference(reference: str) -> bool:
    return bool(_REPO_ID.match(reference)) and not Path(reference).exists()


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
    from huggingface_hub import snapshot_download
    from huggingface_hub import errors as hub_errors

    repo_id, revision = split_reference(reference, revision)
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=DOWNLOADED_FILES))
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


def push(folder, repo_id: str, *, private: bool = False, revision_tag: str | None = None, move_tag: bool = False,
         dry_run: bool = False, api=None) -> dict:
    """Create the Hub repo if needed and upload the model folder (with a freshly written model card).

    Files of an earlier upload that the folder no longer has are deleted from the repo in the same commit.
    An existing `revision_tag` is refused unless `move_tag`, which moves it to the new commit.
    Returns what was (or, with `dry_run`, would be) uploaded, and the commit it made; a dry run writes
    nothing, not even the model card.
    """
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hub_errors

    from .model_folder import CARD_FILE, PUBLISHED_FILES
    from .modelcard import render_model_card, write_model_card

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
    try:
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
    except hub_errors.HfHubHTTPError as error:
        status = getattr(error.response, "status_code", None)
        if status in (401, 403):
            raise ModelLoadError(f"{repo_id}: the Hub refused the upload ({status}); set HF_TOKEN to a token "
                                 "with write access to this namespace") from None
        raise HubUnavailableError(f"{repo_id}: upload failed ({error})") from None
    except (OSError, *_transport_errors()) as error:
        raise HubUnavailableError(f"{repo_id}: the Hub cannot be reached ({type(error).__name__}: {error})") from None
    return {**plan, "commit": commit.oid}


def main(argv=None) -> int:
    """python -m pneumo.hub push|pull ..."""
    import argparse
    import json
    import sys

    from .errors import PneumoError

    parser = argparse.ArgumentParser(prog="python -m pneumo.hub", description="Publish or fetch pneumo models.")
    commands = parser.add_subparsers(dest="command", required=True)
    push_parser = commands.add_parser("push", help="upload a model folder to a Hub model repo")
    push_parser.add_argument("folder")
    push_parser.add_argument("--repo-id", required=True, help="OWNER/NAME")
    push_parser.add_argument("--private", action="store_true")
    push_parser.add_argument("--revision-tag", help="tag the uploaded commit, e.g. v1.0")
    push_parser.add_argument("--move-tag", action="store_true", help="move --revision-tag if it already exists")
    push_parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded; upload nothing")
    pull_parser = commands.add_parser("pull", help="download a model repo into the local cache")
    pull_parser.add_argument("reference", help="OWNER/NAME[@REVISION]")
    args = parser.parse_args(argv)
    try:
        if args.command == "push":
            result = push(args.folder, args.repo_id, private=args.private, revision_tag=args.revision_tag,
                          move_tag=args.move_tag, dry_run=args.dry_run)
        else:
            folder, commit = resolve_model_folder(args.reference)
            result = {"reference": args.reference, "commit": commit, "folder": str(folder)}
    except PneumoError as error:
        print(f"pneumo.hub: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
