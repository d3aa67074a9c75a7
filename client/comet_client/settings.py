"""
Where the client finds its daemon and credentials.

C{comet login} writes C{login.json} in the user's config directory
(platformdirs: C{$XDG_CONFIG_HOME/comet} on Linux).  The file holds a token,
so it is created with mode 0600 (never widened and then narrowed: there is
no moment when another user could read it) and replaced atomically.
C{COMET_URL} and C{COMET_TOKEN} override what it says.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import platformdirs

FILE_NAME = "login.json"


@dataclass(frozen=True)
class Login:
    """A daemon's URL and the credentials to use there (a token, or a user and password)."""

    url: str | None = None
    token: str | None = None
    user: str | None = None
    password: str | None = None


def config_dir() -> str:
    return platformdirs.user_config_dir("comet", appauthor=False)


def login_path() -> str:
    return os.path.join(config_dir(), FILE_NAME)


def load(environ=os.environ) -> Login:
    """The stored login with C{COMET_URL}/C{COMET_TOKEN} over it."""
    stored: dict = {}
    try:
        with open(login_path(), encoding="utf-8") as f:
            stored = json.load(f)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        raise SettingsError(f"cannot read {login_path()}: {e}") from None
    fields = {k: stored.get(k) for k in ("url", "token", "user", "password")}
    if environ.get("COMET_URL"):
        fields["url"] = environ["COMET_URL"]
    if environ.get("COMET_TOKEN"):
        # A token given in the environment wins over any stored credentials.
        fields.update(token=environ["COMET_TOKEN"], user=None, password=None)
    return Login(**fields)


def save(login: Login) -> str:
    """Write C{login} to the login file (mode 0600 from its creation); return its path."""
    directory = config_dir()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = login_path()
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({k: v for k, v in asdict(login).items() if v is not None}, f, indent=2)
            f.write("\n")
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    return path


def forget() -> bool:
    """Remove the login file; whether there was one."""
    try:
        os.unlink(login_path())
        return True
    except FileNotFoundError:
        return False


class SettingsError(Exception):
    """The login file cannot be read."""
