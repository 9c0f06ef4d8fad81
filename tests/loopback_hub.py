"""A Hugging Face Hub stand-in on 127.0.0.1 that serves model repos the way the Hub's file endpoints do.

Enough of the API for `huggingface_hub.snapshot_download`: revision info, the file tree, and
`resolve` (HEAD and GET) with the commit and ETag headers; errors carry the Hub's X-Error-Code headers.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class Repo:
    def __init__(self, files: dict[str, bytes], commit: str, refs: dict[str, str] | None = None,
                 token: str | None = None):
        self.commits = {commit: files}
        self.refs = {"main": commit, **(refs or {})}
        self.token = token  # a private repo answers only to this bearer token

    @classmethod
    def from_folder(cls, folder: Path, commit: str, **kwargs) -> "Repo":
        files = {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}
        return cls(files, commit, **kwargs)

    def resolve(self, revision: str) -> str | None:
        revision = unquote(revision)
        return self.refs.get(revision) or (revision if revision in self.commits else None)


class LoopbackHub:
    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.drop_connections = False
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_HEAD(self):
                hub.handle(self, body=False)

            def do_GET(self):
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

    def handle(self, request, body: bool):
        self.requests.append((request.command, request.path))
        if self.drop_connections:
            request.close_connection = True
            request.connection.close()  # no status line at all: the client sees a dropped connection
            return
        parts = [unquote(p) for p in urlparse(request.path).path.strip("/").split("/")]
        if parts[:2] == ["api", "models"] and len(parts) >= 6:
            repo_id, kind, revision = "/".join(parts[2:4]), parts[4], parts[5]
            self.api(request, repo_id, kind, revision)
        elif len(parts) >= 5 and parts[2] == "resolve":
            self.resolve(request, "/".join(parts[:2]), parts[3], "/".join(parts[4:]), body)
        else:
            self.reply(request, 404, error="RepoNotFound")

    def authorised_repo(self, request, repo_id):
        repo = self.repos.get(repo_id)
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

    def files_at(self, request, repo_id, revision):
        """(commit, files) of a repo revision the request may see, or (None, None) after an error reply."""
        repo = self.authorised_repo(request, repo_id)
        commit = repo.resolve(revision) if repo else None
        if repo and commit is None:
            self.reply(request, 404, error="RevisionNotFound")
        return (commit, repo.commits[commit]) if commit else (None, None)

    def api(self, request, repo_id, kind, revision):
        commit, files = self.files_at(request, repo_id, revision)
        if commit is None:
            return
        repo = self.repos[repo_id]
        if kind == "revision":
            payload = {"id": repo_id, "modelId": repo_id, "sha": commit, "private": bool(repo.token),
                       "siblings": [{"rfilename": name} for name in files]}
        else:  # tree
            payload = [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                       for name, data in files.items()]
        self.reply(request, 200, json.dumps(payload).encode(), content_type="application/json")

    def resolve(self, request, repo_id, revision, filename, body):
        commit, files = self.files_at(request, repo_id, revision)
        if commit is None:
            return
        data = files.get(filename)
        if data is None:
            return self.reply(request, 404, error="EntryNotFound")
        headers = {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha1(data).hexdigest()}"'}
        self.reply(request, 200, data if body else b"", headers=headers, length=len(data))

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
