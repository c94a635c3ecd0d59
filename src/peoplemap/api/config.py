"""What `peoplemap serve` was told: where to listen, which folders index jobs may read, the token.

A token is required whenever the server listens on anything but a loopback address (or when the
operator asks for one). It comes from `--token` / PEOPLEMAP_API_TOKEN, or else from the library's
`api-token` file, made on first use with 0600 permissions and refused when others can read it.
"""
from __future__ import annotations

import ipaddress
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import InputError

TOKEN_FILE = "api-token"
"""The token's file inside the library folder (0600)."""
TOKEN_ENV = "PEOPLEMAP_API_TOKEN"
MIN_TOKEN_CHARS = 16
DEFAULT_PORT = 8600
JSON_BODY_LIMIT = 1024 * 1024
"""Largest JSON request body: a million bytes of item ids is far more than a person holds."""
MULTIPART_SLACK = 64 * 1024
"""Bytes a multipart upload may carry beyond the image itself (boundaries, part headers)."""


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach: 127.0.0.0/8, ::1, "localhost"."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@dataclass(frozen=True)
class ServerConfig:
    """Everything the app needs besides the Library. Build it with `ServerConfig.make`."""

    library: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    roots: tuple[Path, ...] = ()
    """Folders (resolved, symlinks followed) under which index jobs may read; none: no index jobs."""
    token: Optional[str] = field(default=None, repr=False)
    """The bearer token every request must carry; None: no token (loopback only)."""
    token_source: Optional[str] = None
    """Where the token came from, for the start-up message (never the token itself)."""
    max_upload_bytes: int = 25 * 1024 * 1024
    access_log: bool = False

    @classmethod
    def make(cls, library: str | os.PathLike, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
             roots: tuple[str, ...] | list[str] = (), token: Optional[str] = None,
             require_token: bool = False, max_upload_mb: int = 25,
             access_log: bool = False) -> "ServerConfig":
        """Check the options and settle the token. InputError names what is wrong."""
        lib = Path(library).absolute()
        if not 0 <= int(port) <= 65535:
            raise InputError(f"port must be 0..65535, got {port}")
        resolved = []
        for r in roots:
            p = Path(os.path.realpath(os.path.expanduser(str(r))))
            if not p.is_dir():
                raise InputError(f"--root {r!r} is not a folder")
            resolved.append(p)
        if token is None:
            token = os.environ.get(TOKEN_ENV) or None
            source = f"environment variable {TOKEN_ENV}" if token else None
        else:
            source = "--token"
        if token is not None:
            token = check_token(token)
        elif require_token or not is_loopback(host):
            token = load_or_create_token(lib / TOKEN_FILE)
            source = f"file {lib / TOKEN_FILE}"
        return cls(library=lib, host=host, port=int(port), roots=tuple(resolved), token=token,
                   token_source=source, max_upload_bytes=int(max_upload_mb) * 1024 * 1024,
                   access_log=access_log)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def check_token(token: str) -> str:
    """A token a user gave: printable ASCII without spaces, at least MIN_TOKEN_CHARS long."""
    t = token.strip()
    if len(t) < MIN_TOKEN_CHARS:
        raise InputError(f"the API token must have at least {MIN_TOKEN_CHARS} characters (got "
                         f"{len(t)}); leave it out to have one generated into the library")
    if not all(33 <= ord(c) < 127 for c in t):
        raise InputError("the API token may hold only printable ASCII characters without spaces")
    return t


def load_or_create_token(path: Path) -> str:
    """The token stored at `path`, made (random, 256 bits, mode 0600) if missing. A file others can
    read, a symlink or a non-regular file is refused: the token guards the library's faces."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        token = secrets.token_urlsafe(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                         0o600)
        except FileExistsError:  # another server made it just now: read that one
            return load_or_create_token(path)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return token
    except OSError as e:
        raise InputError(f"cannot read the token file {path} ({e.strerror or e}); it must be a "
                         "regular file, not a symlink") from None
    with os.fdopen(fd, "r") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"the token file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise InputError(f"the token file {path} can be read by others (mode "
                             f"{stat.S_IMODE(st.st_mode):o}); run `chmod 600 {path}` or delete it "
                             "to have a new one made")
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            raise InputError(f"the token file {path} belongs to another user; delete it to have a "
                             "new one made")
        return check_token(f.read(4096))
