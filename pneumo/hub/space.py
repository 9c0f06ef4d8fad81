"""Publishing the demo as a Gradio Space on the Hugging Face Hub (`pneumo hub deploy-space`)."""

from __future__ import annotations

from pathlib import Path

from .bundled import BUNDLED_MODELS, REPO_ROOT, SELECTION_VARIABLE
from ..errors import SpaceDeployError
from .model_folder import CARD_FILE, CONFIG_FILE, NETWORK_FILES, OOD_REFERENCE_FILE, metrics_path
from .repos import upload_errors

# What a Space runs on, as glob patterns from the repository root; its README.md is generated (space_card).
# packages.txt: the Debian packages the Space installs (a CJK font, so the PDF report prints such names).
SPACE_FILES = ("app.py", "requirements.txt", "packages.txt", "pneumo/**/*.py", "examples/*.jpeg", "examples/README.md")
# The Space's folders that a deploy owns: a file there that the working tree no longer has is deleted.
SPACE_MANAGED_FOLDERS = ("pneumo/", "examples/")
# What the Space downloads from each model repo at build time: what loading a model and the demo's
# model summary read. Named one by one: preload_from_hub takes file names, not patterns.
PRELOADED_MODEL_FILES = [CONFIG_FILE, *NETWORK_FILES, OOD_REFERENCE_FILE, CARD_FILE,
                         *(metrics_path("", split).name for split in ("validation", "test"))]


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
    with upload_errors(space_id, SpaceDeployError):
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
