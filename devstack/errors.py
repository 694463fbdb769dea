"""Every error devstack raises on purpose, each with the exit code the CLI maps it to.

    DevstackError                 exit 1   base; ``str(err)`` is the whole message
    ├── ManifestError             exit 2   the manifest is unreadable or invalid (file:line: key)
    │   └── ManifestErrors        exit 2   several ManifestErrors found in one pass
    ├── StateError                exit 3   .devstack/ is locked by a live run, or unusable
    ├── PortError                 exit 4   a port that must not move (the proxy's) is taken
    ├── ServiceStartError         exit 5   a service could not start (command not found, crash loop)
    ├── TLSError                  exit 6   the local CA or a certificate cannot be made or loaded
    ├── TrustError                exit 7   the CA could not be installed into a trust store
    ├── StackNotRunning           exit 8   no ``devstack up`` runs for this manifest
    └── ControlError              exit 1   the running stack refused a request or did not answer

Only ``devstack.cli`` turns these into ``error: ...`` on stderr and an exit code; foreign
exceptions are wrapped with ``raise ... from exc`` where they cross into devstack.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class DevstackError(Exception):
    """Base of every error devstack reports to the user."""

    exit_code = 1


class ManifestError(DevstackError):
    """The manifest is invalid; says the file, the line and the key, and what was expected."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        path: Path | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.key = key
        super().__init__(self.format())

    def format(self) -> str:
        where = ""
        if self.path is not None:
            where = str(self.path)
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.message}"


class ManifestErrors(ManifestError):
    """Several problems found while validating one manifest, reported together."""

    def __init__(self, errors: Sequence[ManifestError]) -> None:
        self.errors = tuple(errors)
        first = self.errors[0]
        super().__init__(first.message, path=first.path, line=first.line, key=first.key)

    def format(self) -> str:
        return "\n".join(e.format() for e in self.errors)


class StateError(DevstackError):
    """The state folder is locked by a live run, or cannot be used."""

    exit_code = 3


class PortError(DevstackError):
    """A port that must not move is held by someone else."""

    exit_code = 4


class ServiceStartError(DevstackError):
    """A service could not be started or never became ready."""

    exit_code = 5


class TLSError(DevstackError):
    """The local certificate authority or a leaf certificate is unusable."""

    exit_code = 6


class TrustError(DevstackError):
    """Installing or removing the CA in a trust store failed."""

    exit_code = 7


class StackNotRunning(DevstackError):
    """No ``devstack up`` holds this manifest's run lock."""

    exit_code = 8


class ControlError(DevstackError):
    """The stack refused a request (an unknown service) or did not answer."""

    exit_code = 1
