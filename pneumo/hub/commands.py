"""`pneumo hub push|pull|deploy-space`: publish or fetch pneumo models (pneumo.hub.repos), publish
the demo as a Gradio Space (pneumo.hub.space)."""

from __future__ import annotations

import argparse
import json

from .bundled import BUNDLED_MODELS
from ..cli import command
from .repos import push, resolve_model_folder
from .space import deploy_space


@command("pneumo hub")
def main(argv=None) -> int:
    """pneumo hub push|pull|deploy-space ..."""
    parser = argparse.ArgumentParser(prog="pneumo hub",
                                     description="Publish or fetch pneumo models; publish the demo as a Space.")
    commands = parser.add_subparsers(dest="command", required=True)
    push_parser = commands.add_parser("push", help="upload a model folder to a Hub model repo")
    push_parser.add_argument("folder", help="the model folder to upload")
    push_parser.add_argument("--repo-id", required=True, help="the model repo, OWNER/NAME")
    push_parser.add_argument("--private", action="store_true", help="make a new repo private")
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
    if args.command == "push":
        result = push(args.folder, args.repo_id, private=args.private, revision_tag=args.revision_tag,
                      move_tag=args.move_tag, dry_run=args.dry_run)
    elif args.command == "deploy-space":
        result = deploy_space(args.space_id, [repo_id.strip() for repo_id in args.models.split(",")],
                              private=args.private, dry_run=args.dry_run)
    else:
        folder, commit = resolve_model_folder(args.reference)
        result = {"reference": args.reference, "commit": commit, "folder": str(folder)}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
