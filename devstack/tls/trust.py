"""Putting devstack's CA into the trust stores browsers and tools read, and taking it out again.

Two kinds of store, each changed only with its own tools:

- the operating system's: a folder of anchors plus the command that rebuilds the bundle
  (Debian/Ubuntu ``/usr/local/share/ca-certificates`` + ``update-ca-certificates``, Fedora/RHEL
  ``/etc/pki/ca-trust/source/anchors`` + ``update-ca-trust``, Arch, openSUSE), or on macOS the
  System keychain through ``security add-trusted-cert``;
- the NSS databases Chromium on Linux (``~/.pki/nssdb``) and Firefox (each profile's ``cert9.db``)
  read, changed with ``certutil`` (:mod:`devstack.tls.nss` says where each browser looks). On an
  account where Chromium never ran, its database does not exist yet: ``install`` makes it, so the
  browser trusts the CA from its first start. A Firefox without a profile gets no database (Firefox
  makes the profile on its first run); the report says to run ``devstack trust`` again after that.

``$DEVSTACK_TRUST_SYSTEM_DIR`` names an anchor folder to use instead of the detected system store
(no command rebuilds a bundle from it): for a user who cannot write the system's, or a test that
must not.

Each step is reported, never raised: what was done, what was already so, what could not be done
and the command to do it by hand. Both directions are idempotent; ``uninstall`` removes exactly the
entries ``install`` makes: an anchor file and NSS nicknames that carry the CA's fingerprint. It
leaves the databases themselves, which browsers own and use for more than devstack's CA.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from devstack.tls import nss
from devstack.tls.ca import CertificateAuthority
from devstack.tls.command import CommandFailed, run
from devstack.tls.nss import NssStore

logger = logging.getLogger(__name__)

SYSTEM_DIR_VARIABLE = "DEVSTACK_TRUST_SYSTEM_DIR"
MACOS_KEYCHAIN = Path("/Library/Keychains/System.keychain")

# Anchor folder, the command that rebuilds the system bundle after adding, and after removing
# (Debian's --fresh also drops the stale links a removed anchor leaves). The first that exists wins.
LINUX_ANCHOR_FOLDERS: tuple[tuple[Path, tuple[str, ...], tuple[str, ...]], ...] = (
    (  # Fedora, RHEL
        Path("/etc/pki/ca-trust/source/anchors"),
        ("update-ca-trust", "extract"),
        ("update-ca-trust", "extract"),
    ),
    (  # Debian, Ubuntu
        Path("/usr/local/share/ca-certificates"),
        ("update-ca-certificates",),
        ("update-ca-certificates", "--fresh"),
    ),
    (  # Arch
        Path("/etc/ca-certificates/trust-source/anchors"),
        ("trust", "extract-compat"),
        ("trust", "extract-compat"),
    ),
    (  # openSUSE
        Path("/usr/share/pki/trust/anchors"),
        ("update-ca-certificates",),
        ("update-ca-certificates", "--fresh"),
    ),
)


class Detect(enum.Enum):
    """Marks a parameter as "find it on this machine"."""

    DETECT = "detect"


DETECT = Detect.DETECT


class Outcome(enum.StrEnum):
    INSTALLED = "installed"
    ALREADY_TRUSTED = "already trusted"
    REMOVED = "removed"
    NOT_PRESENT = "not present"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class TrustStep:
    """What happened to one store."""

    store: str
    outcome: Outcome
    detail: str = ""
    """What was done, or why not and what to do instead (may span lines)."""


@dataclass(frozen=True)
class TrustReport:
    ca_path: Path
    ca_name: str
    fingerprint: str
    action: Literal["install", "uninstall"]
    steps: tuple[TrustStep, ...]

    @property
    def failed(self) -> tuple[TrustStep, ...]:
        return tuple(s for s in self.steps if s.outcome is Outcome.FAILED)

    @property
    def is_complete(self) -> bool:
        """True when no store failed (skipped stores do not count)."""
        return not self.failed

    def lines(self) -> list[str]:
        """The report as lines for a terminal."""
        lines = [f"{self.ca_name}: {self.ca_path}", f"  SHA-256 {self.fingerprint}"]
        width = max(len(o.value) for o in Outcome)
        for step in self.steps:
            detail, *more = step.detail.splitlines() or [""]
            lines.append(
                f"  {step.outcome.value:<{width}}  {step.store}{': ' if detail else ''}{detail}"
            )
            lines.extend(f"  {'':<{width}}    {line}" for line in more)
        lines.extend(self._by_hand())
        return lines

    def _by_hand(self) -> list[str]:
        path = shlex.quote(str(self.ca_path))
        if self.action == "uninstall":
            return [
                "if you pointed programs at the CA by hand, undo that too:",
                "  unset NODE_EXTRA_CA_CERTS SSL_CERT_FILE REQUESTS_CA_BUNDLE",
            ]
        return [
            "to trust the CA by hand in a program or a shell:",
            f"  export NODE_EXTRA_CA_CERTS={path}  # Node.js, added to its own CAs",
            f"  export SSL_CERT_FILE={path}  # OpenSSL users (Python ssl, curl, Ruby);"
            " replaces the system bundle",
            f"  export REQUESTS_CA_BUNDLE={path}  # Python requests; replaces certifi's bundle",
        ]


class SystemStore(Protocol):
    """One operating-system trust store."""

    @property
    def description(self) -> str: ...

    def contains(self, ca: CertificateAuthority) -> bool: ...

    def add(self, ca: CertificateAuthority) -> TrustStep: ...

    def remove(self, ca: CertificateAuthority) -> TrustStep: ...


def install(
    ca: CertificateAuthority,
    *,
    system_dir: Path | Detect | None = DETECT,
    refresh_command: Sequence[str] | None = None,
    nss_dbs: Sequence[Path] | Detect = DETECT,
    certutil: str | Detect | None = DETECT,
) -> TrustReport:
    """Trust ``ca`` in the system store and every NSS database found.

    ``system_dir``: an anchor folder, ``None`` to leave the system store alone, or detected.
    ``refresh_command`` rebuilds the bundle after a change; ``None`` means the detected store's
    commands, and no command at all when ``system_dir`` is given (so a test pointing at a temporary
    folder can never rebuild the real bundle). ``nss_dbs``: NSS database folders (made when
    missing), or detected: those under the home folder, and the ones installed browsers will read
    (see :func:`devstack.tls.nss.find_nss_stores`). ``certutil``: its path, ``None`` as if not
    installed, or looked up on PATH.
    """
    stores = _Stores.resolve(system_dir, refresh_command, nss_dbs, certutil)
    steps = _system_steps(ca, stores, adding=True) + _nss_steps(ca, stores, adding=True)
    return _report(ca, "install", steps)


def uninstall(
    ca: CertificateAuthority,
    *,
    system_dir: Path | Detect | None = DETECT,
    refresh_command: Sequence[str] | None = None,
    nss_dbs: Sequence[Path] | Detect = DETECT,
    certutil: str | Detect | None = DETECT,
) -> TrustReport:
    """Remove what :func:`install` added; the same parameters, meaning the same stores."""
    stores = _Stores.resolve(system_dir, refresh_command, nss_dbs, certutil)
    steps = _system_steps(ca, stores, adding=False) + _nss_steps(ca, stores, adding=False)
    return _report(ca, "uninstall", steps)


def detect_system_store() -> SystemStore | None:
    """The store of this operating system, or None where devstack knows none.

    ``$DEVSTACK_TRUST_SYSTEM_DIR``, when set, wins: an anchor folder and no rebuild command.
    """
    override = os.environ.get(SYSTEM_DIR_VARIABLE)
    if override:
        return AnchorFolder(Path(override).expanduser())
    if sys.platform == "darwin":
        return MacKeychain(MACOS_KEYCHAIN)
    for folder, after_add, after_remove in LINUX_ANCHOR_FOLDERS:
        if folder.is_dir():
            return AnchorFolder(folder, after_add, after_remove)
    return None


# --- the operating system's store ---------------------------------------------------------------


@dataclass(frozen=True)
class AnchorFolder:
    """A folder of trusted PEM files and the commands that rebuild the bundle from it."""

    folder: Path
    refresh_command: tuple[str, ...] = ()
    """Run after adding an anchor (and after removing one, unless the next field is set)."""
    refresh_after_remove: tuple[str, ...] | None = None

    @property
    def description(self) -> str:
        return f"system store {self.folder}"

    def anchor_path(self, ca: CertificateAuthority) -> Path:
        return self.folder / f"devstack-{ca.short_fingerprint}.crt"

    def contains(self, ca: CertificateAuthority) -> bool:
        try:
            cert = x509.load_pem_x509_certificate(self.anchor_path(ca).read_bytes())
        except (OSError, ValueError):
            return False
        return cert == ca.certificate

    def add(self, ca: CertificateAuthority) -> TrustStep:
        anchor = self.anchor_path(ca)
        change = f"install -m 644 {shlex.quote(str(ca.cert_path))} {shlex.quote(str(anchor))}"
        try:
            _write_public(anchor, ca.pem)
        except OSError as exc:
            return self._failed(exc, change, self.refresh_command)
        return self._refreshed(Outcome.INSTALLED, f"wrote {anchor}", self.refresh_command)

    def remove(self, ca: CertificateAuthority) -> TrustStep:
        anchor = self.anchor_path(ca)
        refresh = self.refresh_command
        if self.refresh_after_remove is not None:
            refresh = self.refresh_after_remove
        try:
            anchor.unlink()
        except OSError as exc:
            return self._failed(exc, f"rm {shlex.quote(str(anchor))}", refresh)
        return self._refreshed(Outcome.REMOVED, f"removed {anchor}", refresh)

    def _refreshed(self, outcome: Outcome, done: str, refresh: tuple[str, ...]) -> TrustStep:
        if not refresh:
            return TrustStep(self.description, outcome, done)
        try:
            run(refresh)
        except CommandFailed as exc:
            detail = f"{done}, but {exc}; run:\n  sudo {shlex.join(refresh)}"
            return TrustStep(self.description, Outcome.FAILED, detail)
        return TrustStep(self.description, outcome, f"{done}; ran {shlex.join(refresh)}")

    def _failed(self, exc: OSError, change: str, refresh: tuple[str, ...]) -> TrustStep:
        if not isinstance(exc, PermissionError):
            return TrustStep(self.description, Outcome.FAILED, str(exc))
        by_hand = [f"  sudo {change}"] + ([f"  sudo {shlex.join(refresh)}"] if refresh else [])
        return TrustStep(
            self.description, Outcome.FAILED, "\n".join(["permission denied; run:", *by_hand])
        )


@dataclass(frozen=True)
class MacKeychain:
    """The macOS System keychain, with the CA marked as a trusted root (needs an admin)."""

    keychain: Path

    @property
    def description(self) -> str:
        return f"macOS keychain {self.keychain}"

    def contains(self, ca: CertificateAuthority) -> bool:
        command = ["security", "find-certificate", "-a", "-Z", "-c", ca.name, str(self.keychain)]
        try:
            output = run(command)
        except CommandFailed:
            return False
        return _sha1(ca) in output.upper()

    def add(self, ca: CertificateAuthority) -> TrustStep:
        command = ["security", "add-trusted-cert", "-d", "-r", "trustRoot", "-k"]
        return self._change([*command, str(self.keychain), str(ca.cert_path)], Outcome.INSTALLED)

    def remove(self, ca: CertificateAuthority) -> TrustStep:
        untrust = self._change(
            ["security", "remove-trusted-cert", "-d", str(ca.cert_path)], Outcome.REMOVED
        )
        if untrust.outcome is Outcome.FAILED:
            return untrust
        delete = ["security", "delete-certificate", "-Z", _sha1(ca), str(self.keychain)]
        return self._change(delete, Outcome.REMOVED)

    def _change(self, command: list[str], outcome: Outcome) -> TrustStep:
        try:
            run(command)
        except CommandFailed as exc:
            return TrustStep(
                self.description, Outcome.FAILED, f"{exc}; run:\n  sudo {shlex.join(command)}"
            )
        return TrustStep(self.description, outcome, f"ran {shlex.join(command)}")


def _system_steps(ca: CertificateAuthority, stores: _Stores, *, adding: bool) -> list[TrustStep]:
    system = stores.system
    if system is None:
        if not stores.system_detected:
            return []
        return [TrustStep("system store", Outcome.SKIPPED, "none known on this operating system")]
    present = system.contains(ca)
    if adding:
        return [_already(system.description) if present else system.add(ca)]
    return [system.remove(ca) if present else TrustStep(system.description, Outcome.NOT_PRESENT)]


# --- NSS (Chromium, Firefox) --------------------------------------------------------------------


def nss_nickname(ca: CertificateAuthority) -> str:
    """The name the CA gets in an NSS database; the fingerprint makes it exactly ours."""
    return f"{ca.name} {ca.short_fingerprint}"


def _nss_steps(ca: CertificateAuthority, stores: _Stores, *, adding: bool) -> list[TrustStep]:
    if not stores.nss:
        if not stores.nss_detected:
            return []
        return [_no_browser(adding=adding)]
    return [_nss_step(ca, stores.certutil, store, adding=adding) for store in stores.nss]


def _no_browser(*, adding: bool) -> TrustStep:
    if sys.platform == "darwin":
        detail = "no Firefox found (Chrome and Safari read the keychain)"
    else:
        detail = f"no Chromium, Chrome or Firefox on PATH, nor an NSS database in {Path.home()}"
    return TrustStep("browsers", Outcome.SKIPPED if adding else Outcome.NOT_PRESENT, detail)


def _nss_step(
    ca: CertificateAuthority, certutil: str | None, store: NssStore, *, adding: bool
) -> TrustStep:
    exists = store.exists
    if not exists and not (adding and store.is_creatable):
        if not adding:
            return TrustStep(store.description, Outcome.NOT_PRESENT, "no database there")
        return TrustStep(store.description, Outcome.SKIPPED, store.missing or "no database there")
    if certutil is None:
        return TrustStep(store.description, Outcome.SKIPPED, nss.certutil_missing())
    nickname = nss_nickname(ca)
    try:
        if not exists:
            return _nss_create(ca, certutil, store)
        present = nss.contains(certutil, store.folder, nickname)
        if adding and present:
            return _already(store.description)
        if not adding and not present:
            return TrustStep(store.description, Outcome.NOT_PRESENT)
        if adding:
            nss.add(certutil, store.folder, nickname, ca.cert_path)
            return TrustStep(
                store.description, Outcome.INSTALLED, "restart the browser if it is running"
            )
        nss.remove(certutil, store.folder, nickname)
        return TrustStep(store.description, Outcome.REMOVED)
    except CommandFailed as exc:
        return TrustStep(store.description, Outcome.FAILED, str(exc))


def _nss_create(ca: CertificateAuthority, certutil: str, store: NssStore) -> TrustStep:
    """Make the database a browser will read (it has not run yet) and trust the CA in it."""
    try:
        nss.create(certutil, store.folder)
        nss.add(certutil, store.folder, nss_nickname(ca), ca.cert_path)
    except (CommandFailed, OSError) as exc:
        by_hand = nss.by_hand(store.folder, nss_nickname(ca), ca.cert_path)
        detail = "\n".join([f"{exc}; to do it by hand:", *(f"  {line}" for line in by_hand)])
        return TrustStep(store.description, Outcome.FAILED, detail)
    return TrustStep(
        store.description,
        Outcome.INSTALLED,
        "made the database the browser will read (it has not run yet) and added the CA",
    )


# --- plumbing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stores:
    system: SystemStore | None
    system_detected: bool
    nss: tuple[NssStore, ...]
    nss_detected: bool
    certutil: str | None

    @classmethod
    def resolve(
        cls,
        system_dir: Path | Detect | None,
        refresh_command: Sequence[str] | None,
        nss_dbs: Sequence[Path] | Detect,
        certutil: str | Detect | None,
    ) -> _Stores:
        system: SystemStore | None
        if system_dir is DETECT:
            system = detect_system_store()
            if refresh_command is not None and isinstance(system, AnchorFolder):
                system = AnchorFolder(system.folder, tuple(refresh_command))  # for both ways
        elif system_dir is None:
            system = None
        else:
            system = AnchorFolder(system_dir, tuple(refresh_command or ()))
        return cls(
            system=system,
            system_detected=system_dir is DETECT,
            nss=_nss_stores(nss_dbs),
            nss_detected=nss_dbs is DETECT,
            certutil=shutil.which("certutil") if certutil is DETECT else certutil,
        )


def _nss_stores(nss_dbs: Sequence[Path] | Detect) -> tuple[NssStore, ...]:
    if nss_dbs is DETECT:
        return nss.find_nss_stores()
    return tuple(NssStore("NSS database", db, is_creatable=True) for db in nss_dbs)


def _report(
    ca: CertificateAuthority, action: Literal["install", "uninstall"], steps: list[TrustStep]
) -> TrustReport:
    report = TrustReport(ca.cert_path, ca.name, ca.fingerprint, action, tuple(steps))
    for step in steps:
        logger.debug("%s %s: %s %s", action, step.store, step.outcome.value, step.detail)
    return report


def _already(store: str) -> TrustStep:
    return TrustStep(store, Outcome.ALREADY_TRUSTED)


def _sha1(ca: CertificateAuthority) -> str:
    """macOS ``security`` names certificates by SHA-1 (identification only, not security)."""
    return ca.certificate.fingerprint(hashes.SHA1()).hex().upper()


def _write_public(path: Path, data: bytes) -> None:
    """Write a world-readable file atomically: temporary file, then rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # whatever the umask
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
