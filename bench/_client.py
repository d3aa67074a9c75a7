"""
The benchmarks' client of Comet's API: JSON in and out, a Bearer token, and
the waiting for tasks; one class, so that every script speaks to the daemon
by the same rules (the JSON media type on every change, an empty body too).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request


class Client:
    """The daemon's API: JSON in and out, a Bearer token."""

    def __init__(self, base: str, token: str, timeout: float = 120):
        self.base = base
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body=None) -> tuple[int, object]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if method != "GET":
            # Every change carries the JSON media type, an empty body included:
            # the daemon refuses any other (a cross-site form cannot set it).
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
                return response.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, (json.loads(raw) if raw else None)

    def ok(self, method: str, path: str, body=None, codes=(200, 201, 202, 204)):
        code, answer = self.request(method, path, body)
        if code not in codes:
            raise RuntimeError(f"{method} {path}: {code} {answer}")
        return answer

    def task_done(self, href: str) -> dict | None:
        task = self.ok("GET", href)
        return None if task["status"] == "running" else task

    def wait(self, answer: dict, timeout: float = 600) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            task = self.task_done(answer["href"])
            if task is not None:
                if task["status"] != "finished":
                    raise RuntimeError(f"task failed: {task}")
                return task
            if time.monotonic() > deadline:
                raise RuntimeError(f"task still running after {timeout} s: {answer}")
            time.sleep(0.2)
