"""Model references on the Hugging Face Hub: `OWNER/NAME` or `OWNER/NAME@REVISION`.

Downloads go through `huggingface_hub` into its standard cache (HF_HOME / HF_HUB_CACHE are respected),
so a revision pulled once loads offline (HF_HUB_OFFLINE=1) afterwards.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import HubUnavailableError, ModelLoadError, ModelNotFoundError

# Only what a model folder needs; checkpoints and plots stay behind.
MODEL_FILES = ["config.json", "*.keras", "README.md", "metrics_*.json"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def is_hub_reference(reference: str) -> bool:
    return bool(_REPO_ID.match(reference)) and not Path(reference).exists()


def split_reference(reference: str, revision: str | None = None) -> tuple[str, str | None]:
    repo_id, _, pinned = reference.partition("@")
    return repo_id, revision or pinned or None


def resolve_model_folder(reference: str, revision: str | None = None) -> tuple[Path, str]:
    """Download (or find in the cache) the model files of a Hub repo; returns (folder, commit hash)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub import errors as hub_errors

    repo_id, revision = split_reference(reference, revision)
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=MODEL_FILES))
    except hub_errors.RevisionNotFoundError:
        raise ModelNotFoundError(f"{repo_id}: revision {revision!r} does not exist on the Hub") from None
    except hub_errors.GatedRepoError:
        raise ModelLoadError(f"{repo_id}: gated repo; accept its terms on the Hub and set HF_TOKEN") from None
    except hub_errors.RepositoryNotFoundError:
        raise ModelNotFoundError(
            f"{repo_id}: no such model repo on the Hub, or it is private and HF_TOKEN is missing or wrong") from None
    except hub_errors.LocalEntryNotFoundError:
        raise HubUnavailableError(
            f"{repo_id}@{revision or 'main'}: the Hub cannot be reached and this revision is not in the local "
            "cache; connect once to download it, or use a bundled model folder") from None
    except (hub_errors.HfHubHTTPError, OSError) as error:
        raise HubUnavailableError(f"{repo_id}: download failed ({error})") from None
    # The snapshot folder is named after the commit it holds: an immutable record of what was loaded.
    return folder, folder.name
