"""A Hugging Face Hub stand-in on 127.0.0.1 that serves and accepts repos the way the Hub's API does.

Enough of the API for `huggingface_hub.snapshot_download` (revision info, the file tree, `resolve` with
the commit and ETag headers) and for `HfApi` uploads of small files: create a repo, ask how to upload
each file (always "regular": its bytes travel base64 in the commit), commit (NDJSON: a header line, then
`file` and `deletedFile` lines), list and move tags, validate a README's YAML, set Space variables.
A commit becomes the branch's new head, so what was uploaded can be downloaded again. Errors carry the
Hub's X-Error-Code headers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import yaml

# Every repo the Hub creates starts with one commit holding this file.
GITATTRIBUTES = b"*.h5 filter=lfs diff=lfs merge=lfs -text\n"


def client_env(url: str, home, token: str | None = None) -> dict[str, str]:
    """The environment of a client process that talks to the Hub at `url` only, with `token` (or none: not
    even a token saved on this machine, since HF_HOME is `home`). huggingface_hub reads these at import."""
    env = {**os.environ, "HF_ENDPOINT": url, "HF_HOME": str(home), "HF_HUB_CACHE": str(Path(home) / "hub"),
           "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_ETAG_TIMEOUT": "5",
           "HF_HUB_DOWNLOAD_TIMEOUT": "5", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("HF_TOKEN", None)
    if token:
        env["HF_TOKEN"] = token
    return env


def git_blob_id(data: bytes) -> str:
    """The id git (and the Hub, for a file stored outside LFS) gives these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    def __init__(self, files: dict[str, bytes], commit: str, tags: dict[str, str] | None = None,
                 token: str | None = None):
        self.commits = {commit: files}
        self.branches = {"main": commit}
        self.tags = dict(tags or {})
        self.token = token  # a private repo answers only to this bearer token
        self.summaries = {commit: "initial commit"}
        self.created_with: dict = {}  # the create request's payload (sdk, visibility, ...)
        self.variables: dict[str, dict] = {}  # a Space's variables: key -> {"value", "description"}

    @classmethod
    def from_folder(cls, folder: Path, commit: str, **kwargs) -> "Repo":
        files = {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}
        return cls(files, commit, **kwargs)

    def resolve(self, revision: str) -> str | None:
        revision = unquote(revision)
        return (self.branches.get(revision) or self.tags.get(revision)
                or (revision if revision in self.commits else None))

    def files(self, revision: str = "main") -> dict[str, bytes]:
        return self.commits[self.resolve(revision)]

    def commit(self, branch: str, files: dict[str, bytes], summary: str) -> str:
        parent = self.branches[branch]
        digest = hashlib.sha1(parent.encode())
        for path in sorted(files):
            digest.update(f"{path}\0{git_blob_id(files[path])}\n".encode())
        oid = digest.hexdigest()
        self.commits[oid], self.summaries[oid], self.branches[branch] = files, summary, oid
        return oid


class LoopbackHub:
    def __init__(self, write_token: str | None = None):
        self.repos: dict[str, Repo] = {}  # model repos
        self.spaces: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.drop_connections = False
        self.write_token = write_token  # when set, every write needs it as a bearer token
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_HEAD(self):
                hub.handle(self, body=False)

            def do_GET(self):
                hub.handle(self, body=True)

            def do_POST(self):
                hub.handle(self, body=True)

            def do_DELETE(self):
                hub.handle(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def downloads(self) -> list[str]:
        return [path for method, path in self.requests if method == "GET" and "/resolve/" in path]

    def repos_of(self, repo_type: str) -> dict[str, Repo]:
        return self.spaces if repo_type in ("space", "spaces") else self.repos

    def handle(self, request, body: bool):
        self.requests.append((request.command, request.path))
        if self.drop_connections:
            request.close_connection = True
            request.connection.close()  # no status line at all: the client sees a dropped connection
            return
        parts = [unquote(p) for p in urlparse(request.path).path.strip("/").split("/")]
        if parts == ["api", "validate-yaml"]:  # open to anyone, as on the Hub
            self.validate_yaml(request, json.loads(self.read_body(request)))
        elif request.command in ("POST", "DELETE"):
            if self.authorised_write(request):
                with self.lock:
                    self.write(request, parts, self.read_body(request))
        elif parts[:1] == ["api"] and len(parts) >= 5 and parts[1] in ("models", "spaces"):
            repo_id, kind = "/".join(parts[2:4]), parts[4]
            self.api(request, parts[1], repo_id, kind, parts[5:])
        elif len(parts) >= 5 and parts[2] == "resolve":
            self.resolve(request, self.repos, "/".join(parts[:2]), parts[3], "/".join(parts[4:]), body)
        elif len(parts) >= 6 and parts[0] == "spaces" and parts[3] == "resolve":
            self.resolve(request, self.spaces, "/".join(parts[1:3]), parts[4], "/".join(parts[5:]), body)
        else:
            self.reply(request, 404, error="RepoNotFound")

    # Reading

    def authorised_repo(self, request, repos, repo_id):
        repo = repos.get(repo_id)
        if repo is None:
            self.reply(request, 404, error="RepoNotFound")
            return None
        if repo.token:
            sent = request.headers.get("Authorization", "")
            if not sent:
                self.reply(request, 401, error="RepoNotFound")
                return None
            if sent != f"Bearer {repo.token}":
                self.reply(request, 401, message="Invalid credentials in Authorization header")
                return None
        return repo

    def files_at(self, request, repos, repo_id, revision):
        """(commit, files) of a repo revision the request may see, or (None, None) after an error reply."""
        repo = self.authorised_repo(request, repos, repo_id)
        commit = repo.resolve(revision) if repo else None
        if repo and commit is None:
            self.reply(request, 404, error="RevisionNotFound")
        return (commit, repo.commits[commit]) if commit else (None, None)

    def api(self, request, repo_type, repo_id, kind, rest):
        repos = self.repos_of(repo_type)
        if kind == "refs":
            repo = self.authorised_repo(request, repos, repo_id)
            if repo:
                self.reply_json(request, {"branches": self.refs(repo.branches, "heads"), "converts": [],
                                          "tags": self.refs(repo.tags, "tags")})
            return
        if kind not in ("revision", "tree") or not rest:
            return self.reply(request, 404, error="EntryNotFound")
        commit, files = self.files_at(request, repos, repo_id, rest[0])
        if commit is None:
            return
        repo = repos[repo_id]
        if kind == "revision":
            payload = {"id": repo_id, "sha": commit, "private": bool(repo.token),
                       "siblings": [{"rfilename": name} for name in files]}
            if repo_type == "models":
                payload["modelId"] = repo_id
            self.reply_json(request, payload)
        else:  # tree (always the whole tree: files only, with their full paths)
            under = "/".join(rest[1:])
            self.reply_json(request, [{"type": "file", "path": name, "size": len(data), "oid": git_blob_id(data)}
                                      for name, data in files.items() if name.startswith(under)])

    @staticmethod
    def refs(names: dict[str, str], kind: str) -> list[dict]:
        return [{"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": commit} for name, commit in names.items()]

    def resolve(self, request, repos, repo_id, revision, filename, body):
        commit, files = self.files_at(request, repos, repo_id, revision)
        if commit is None:
            return
        data = files.get(filename)
        if data is None:
            return self.reply(request, 404, error="EntryNotFound")
        headers = {"X-Repo-Commit": commit, "ETag": f'"{git_blob_id(data)}"'}
        self.reply(request, 200, data if body else b"", headers=headers, length=len(data))

    # Writing

    def authorised_write(self, request) -> bool:
        """No token: 401, as the Hub answers; a token other than write_token: 403 (no write access)."""
        if self.write_token is None:
            return True
        sent = request.headers.get("Authorization", "")
        if sent == f"Bearer {self.write_token}":
            return True
        self.read_body(request)
        if not sent:
            self.reply(request, 401, message="Invalid username or password.")
        else:
            self.reply(request, 403, message="You don't have the rights to write to this repo")
        return False

    @staticmethod
    def read_body(request) -> bytes:
        return request.rfile.read(int(request.headers.get("Content-Length") or 0))

    def write(self, request, parts, payload: bytes):
        if parts == ["api", "repos", "create"]:
            return self.create_repo(request, json.loads(payload))
        if len(parts) < 5 or parts[0] != "api" or parts[1] not in ("models", "spaces"):
            return self.reply(request, 404, error="RepoNotFound")
        repos, repo_id, kind, rest = self.repos_of(parts[1]), "/".join(parts[2:4]), parts[4], parts[5:]
        repo = repos.get(repo_id)
        if repo is None:
            return self.reply(request, 404, error="RepoNotFound")
        if kind == "preupload":
            files = repo.files(rest[0]) if rest and repo.resolve(rest[0]) else {}
            self.reply_json(request, {"files": [
                {"path": item["path"], "uploadMode": "regular", "shouldIgnore": False,
                 "oid": git_blob_id(files[item["path"]]) if item["path"] in files else None}
                for item in json.loads(payload)["files"]]})
        elif kind == "commit" and rest:
            self.commit(request, repo, parts[1], repo_id, rest[0], payload)
        elif kind == "tag" and rest and request.command == "POST":
            tag, commit = json.loads(payload)["tag"], repo.resolve(rest[0])
            if tag in repo.tags:
                return self.reply(request, 409, message=f"Tag {tag} already exists")
            if commit is None:
                return self.reply(request, 404, error="RevisionNotFound")
            repo.tags[tag] = commit
            self.reply_json(request, {})
        elif kind == "tag" and rest and request.command == "DELETE":
            if repo.tags.pop(rest[0], None) is None:
                return self.reply(request, 404, error="RevisionNotFound")
            self.reply_json(request, {})
        elif kind == "variables" and parts[1] == "spaces":
            variable = json.loads(payload)
            repo.variables[variable["key"]] = {"value": variable["value"], "description": variable.get("description")}
            self.reply_json(request, repo.variables)
        else:
            self.reply(request, 404, error="EntryNotFound")

    def create_repo(self, request, payload):
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload['organization']}/{payload['name']}"
        url = f"{self.url}/{'spaces/' if repo_type == 'space' else ''}{repo_id}"
        repos = self.repos_of(repo_type)
        if repo_id in repos:
            return self.reply_json(request, {"error": "You already created this repo", "url": url}, status=409)
        files = {".gitattributes": GITATTRIBUTES}
        repo = Repo(files, hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest())
        repo.created_with = payload
        if payload.get("visibility") == "private":
            repo.token = self.write_token
        repos[repo_id] = repo
        self.reply_json(request, {"url": url})

    def validate_yaml(self, request, payload):
        content = payload["content"]
        front_matter = content.split("---", 2)[1] if content.startswith("---") else ""
        try:
            yaml.safe_load(front_matter)
        except yaml.YAMLError as error:
            return self.reply_json(request, {"errors": [{"message": str(error)}]}, status=400)
        self.reply_json(request, {"errors": [], "warnings": []})

    def commit(self, request, repo, repo_type, repo_id, branch, payload):
        lines = [json.loads(line) for line in payload.splitlines() if line.strip()]
        header, operations = lines[0], lines[1:]
        if header["key"] != "header" or branch not in repo.branches:
            return self.reply(request, 400, message="a commit goes to a branch and starts with its header")
        files = dict(repo.files(branch))
        for operation in operations:
            key, value = operation["key"], operation["value"]
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile" and value["path"] in files:
                del files[value["path"]]
            elif key == "deletedFile":
                return self.reply(request, 404, error="EntryNotFound",
                                  message=f"A file with this name doesn't exist: {value['path']}")
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                files = {path: data for path, data in files.items() if not path.startswith(folder)}
            else:  # lfsFile: never asked for, as preupload answers "regular" for every file
                return self.reply(request, 400, message=f"unexpected commit operation {key}")
        oid = repo.commit(branch, files, header["value"]["summary"])
        prefix = "spaces/" if repo_type == "spaces" else ""
        self.reply_json(request, {"success": True, "commitOid": oid,
                                  "commitUrl": f"{self.url}/{prefix}{repo_id}/commit/{oid}", "hookOutput": ""})

    # Answers

    def reply_json(self, request, payload, status=200):
        self.reply(request, status, json.dumps(payload).encode(), content_type="application/json")

    @staticmethod
    def reply(request, status, data=b"", *, error=None, message=None, headers=None, length=None,
              content_type="application/octet-stream"):
        request.send_response(status)
        for key, value in (headers or {}).items():
            request.send_header(key, value)
        if error:
            request.send_header("X-Error-Code", error)
        if message:
            request.send_header("X-Error-Message", message)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(data) if length is None else length))
        request.end_headers()
        if data:
            request.wfile.write(data)
