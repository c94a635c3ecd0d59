"""One exception family. Every error a user can cause is a PeoplemapError with a message that
names the bad value and what is allowed; the CLI prints it as `Error: ...` and exits 1."""


class PeoplemapError(Exception):
    """Base class of every error peoplemap raises on purpose."""


class InputError(PeoplemapError):
    """A bad argument or option value."""


class NameTakenError(InputError):
    """A person was to be given a name another person already has. `others` are the people with
    that name; the caller asks the user whether they are the same person (merge) or not (keep
    them apart under distinct names)."""

    def __init__(self, message: str, name: str, others: list):
        self.name = name
        self.others = others
        super().__init__(message)


class ImageError(PeoplemapError):
    """An image that cannot be used; `reason` is the short text recorded for skipped files."""

    def __init__(self, reason: str, path: str | None = None):
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {reason}" if path else reason)


class ModelError(PeoplemapError):
    """A model that is unknown, missing its package, or produced something unusable."""


class LibraryError(PeoplemapError):
    """A library that is missing, damaged, busy, or asked to mix incompatible vector sets."""


class LibraryBusyError(LibraryError):
    """Another process holds the library's write lock."""
