"""pneumo on the Hugging Face Hub: model references (`OWNER/NAME` or `OWNER/NAME@REVISION`), publishing a
model folder to a model repo (`push`), and publishing the demo as a Gradio Space (`deploy_space`).

Downloads go through `huggingface_hub` into its standard cache (HF_HOME / HF_HUB_CACHE are respected),
so a revision pulled once loads offline (HF_HUB_OFFLINE=1) afterwards. Uploads go through `HfApi`, which
sends large files through LFS/Xet as the Hub requires (a `git push` of this repository would not).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

from .bundled import BUNDLED_MODELS, REPO_ROOT, SELECTION_VARIABLE
from .errors import HubUnavailableError, ModelLoadError, ModelNotFoundError, PneumoError, SpaceDeployError
from .model_folder import (CARD_FILE, CONFIG_FILE, DOWNLOADED_FILES, NETWORK_FILES, OOD_REFERENCE_FILE,
                           files_to_publish, metrics_path)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")

# What a Space runs on, as glob patterns from the repository root; its README.md is generated (space_card).
# packages.txt: the Debian packages the Space installs (a CJK font, so the PDF report prints such names).
SPACE_FILES = ("app.py", "requirements.txt", "packages.txt", "pneumo/**/*.py", "examples/*.jpeg", "examples/README.md")
# The Space's folders that a deploy owns: a file there that the working tree no longer has is deleted.
SPACE_MANAGED_FOLDERS = ("pneumo/", "examples/")
# What the Space downloads from each model repo at build time: what loading a model and the demo's
# model summary read. Named one by one: preload_from_hub takes file names, not patterns.
PRELOADED_MODEL_FILES = [CONFIG_FILE, *NETWORK_FILES, OOD_REFERENCE_FILE, CARD_FILE,
                         *(metrics_path("", split).name for split in ("validation", "test"))]


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


@contextmanager
def _upload_errors(repo_id: str, refused_error: type[PneumoError]):
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

    from .model_folder import PUBLISHED_FILES
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
    with _upload_errors(repo_id, ModelLoadError):
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


def _check_repo_id(repo_id: str, role: str) -> None:
    """Refuse anything but a plain `OWNER/NAME` the Hub would accept, before any network call."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise SpaceDeployError(f"{repo_id!r} is not a Hub repo id for {role}: {error}") from None
    if "/" not in repo_id:
        raise SpaceDeployError(f"{repo_id!r} is not a Hub repo id for {role}: expected OWNER/NAME")


def space_files(root=REPO_ROOT) -> dict[str, Path]:
    """The working-tree files a Space runs on, by their path in the Space. A pattern that matches nothing is
    refused here: a Space without app.py or its examples would only fail once the Hub builds it."""
    root = Path(root)
    files = {}
    for pattern in SPACE_FILES:
        matches = sorted(path for path in root.glob(pattern) if path.is_file())
        if not matches:
            raise SpaceDeployError(f"{root / pattern}: not in the working tree; the Space needs it")
        files.update({path.relative_to(root).as_posix(): path for path in matches})
    return files


def space_card(model_repo_ids: list[str], root=REPO_ROOT):
    """The Space's README.md, as a `huggingface_hub.SpaceCard`: the repository's own README, with front matter
    that runs app.py on Gradio, links the Space to the model repos (`models:`) and has the Hub download
    their files when it builds the Space (`preload_from_hub:`, one `OWNER/NAME file1,file2,...` per repo)."""
    import yaml
    from huggingface_hub import SpaceCard

    readme = Path(root) / CARD_FILE
    if not readme.is_file():
        raise SpaceDeployError(f"{readme}: not in the working tree; the Space's README.md is built from it")
    try:
        card = SpaceCard(readme.read_text(encoding="utf-8"))
    except (ValueError, yaml.YAMLError) as error:
        raise SpaceDeployError(f"{readme}: its front matter is not valid YAML ({error})") from None
    card.data.sdk, card.data.app_file = "gradio", "app.py"
    card.data.models = list(model_repo_ids)
    card.data.preload_from_hub = [f"{repo_id} {','.join(PRELOADED_MODEL_FILES)}" for repo_id in model_repo_ids]
    return card


def deploy_space(space_id: str, model_repo_ids, *, private: bool = False, dry_run: bool = False, root=REPO_ROOT,
                 api=None) -> dict:
    """Publish the demo from the working tree to a Gradio Space, in one commit: app.py, the library,
    requirements.txt, the examples and a README.md that names the model repos (space_card); and set the
    Space variables through which app.py loads those repos instead of the bundled folders.

    `model_repo_ids` follow BUNDLED_MODELS' order (CNN+LSTM, ResNet50, ...); fewer repos than bundled models
    deploy a demo of the first ones only (PNEUMO_MODELS names them). Files of an earlier deploy under
    SPACE_MANAGED_FOLDERS that the working tree no longer has are deleted in the same commit. `private`
    applies to a Space this call creates. Arguments and files are checked before any network call; a dry run
    makes none and returns the plan, which a deploy returns too, with the deleted files and the commit.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    _check_repo_id(space_id, "the Space")
    model_repo_ids = list(model_repo_ids)
    if not 1 <= len(model_repo_ids) <= len(BUNDLED_MODELS):
        raise SpaceDeployError(f"{space_id}: give 1 to {len(BUNDLED_MODELS)} model repos, for "
                               f"{', '.join(BUNDLED_MODELS)} in that order; got {len(model_repo_ids)}")
    for repo_id in model_repo_ids:
        _check_repo_id(repo_id, "a model")
    shown = dict(zip(BUNDLED_MODELS, model_repo_ids))
    variables = {BUNDLED_MODELS[name][0]: repo_id for name, repo_id in shown.items()}
    variables[SELECTION_VARIABLE] = ",".join(shown)
    files = space_files(root)
    card = space_card(model_repo_ids, root)
    readme = str(card).encode()
    sizes = {path: file.stat().st_size for path, file in files.items()} | {CARD_FILE: len(readme)}
    plan = {"space_id": space_id, "private": private, "models": model_repo_ids, "variables": variables,
            "front_matter": card.data.to_dict(),
            "files": [{"path": path, "bytes": sizes[path]} for path in sorted(sizes)]}
    if dry_run:
        return plan
    api = api or HfApi()
    with _upload_errors(space_id, SpaceDeployError):
        api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        # Before the commit, so that the build the commit starts already finds the models.
        for name in shown:
            api.add_space_variable(space_id, BUNDLED_MODELS[name][0], shown[name],
                                   description=f"The {name} model app.py loads: a Hub repo id")
        api.add_space_variable(space_id, SELECTION_VARIABLE, variables[SELECTION_VARIABLE],
                               description="The models the demo shows")
        stale = sorted(path for path in api.list_repo_files(space_id, repo_type="space")
                       if path.startswith(SPACE_MANAGED_FOLDERS) and path not in files)
        operations = [*(CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(file))
                        for path, file in files.items()),
                      CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=readme),
                      *(CommitOperationDelete(path_in_repo=path) for path in stale)]
        commit = api.create_commit(space_id, operations, repo_type="space",
                                   commit_message="Deploy the pneumo demo from the working tree")
    return {**plan, "deleted": stale, "commit": commit.oid}


def main(argv=None) -> int:
    """python -m pneumo.hub push|pull|deploy-space ..."""
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(prog="python -m pneumo.hub",
                                     description="Publish or fetch pneumo models; publish the demo as a Space.")
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
    space_parser = commands.add_parser("deploy-space", help="publish the demo from the working tree to a Gradio Space")
    space_parser.add_argument("space_id", help="OWNER/NAME of the Space")
    space_parser.add_argument("--models", required=True, help="the published model repos, comma-separated, in "
                                                               f"this order: {', '.join(BUNDLED_MODELS)} (the "
                                                               "first ones only: a demo of those)")
    space_parser.add_argument("--private", action="store_true", help="make a new Space private")
    space_parser.add_argument("--dry-run", action="store_true", help="print the plan; upload nothing")
    args = parser.parse_args(argv)
    try:
        if args.command == "push":
            result = push(args.folder, args.repo_id, private=args.private, revision_tag=args.revision_tag,
                          move_tag=args.move_tag, dry_run=args.dry_run)
        elif args.command == "deploy-space":
            result = deploy_space(args.space_id, [repo_id.strip() for repo_id in args.models.split(",")],
                                  private=args.private, dry_run=args.dry_run)
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
