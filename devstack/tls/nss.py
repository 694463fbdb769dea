"""NSS databases: where Chromium (on Linux) and Firefox read the certificates a user trusts, and
``certutil``, the tool that changes them.

Where each browser looks, and what devstack does about it:

- Chromium, Chrome, Edge and Brave on Linux share one database, ``~/.pki/nssdb`` (the snap's
  Chromium: ``~/snap/chromium/current/.pki/nssdb``). The browser makes it on its first run; on an
  account where it never ran, devstack makes it instead (folders 0700, ``certutil -N
  --empty-password``: the same empty database Chromium would make), so that the CA is trusted from
  the first start. The snap's folder belongs to snapd and exists only once the snap ran, so there
  devstack says to start Chromium once instead. On macOS these browsers read the keychain, which
  the system store covers.
- Firefox keeps a database per profile (``cert9.db`` in ``~/.mozilla/firefox/<profile>``, the snap's
  ``~/snap/firefox/common/.mozilla/firefox``, on macOS ``~/Library/Application
  Support/Firefox/Profiles``). A profile exists only once Firefox has run, and Firefox chooses its
  folder, so devstack makes none: when Firefox is installed without a profile, the report says to
  start Firefox once, quit it and run ``devstack trust`` again. Firefox's enterprise policies are
  not used either: ``policies.json`` is one system-wide file (root to write, shared with whatever
  an administrator put there, so devstack would have to merge itself in and out of it), and its
  ``ImportEnterpriseRoots`` reads the operating system's store on Windows and macOS only.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from devstack.tls.command import CommandFailed, failure, run, spawn

CHROMIUM_COMMANDS = (
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
    "google-chrome-beta",
    "google-chrome-unstable",
    "microsoft-edge",
    "microsoft-edge-stable",
    "brave-browser",
)
"""Browsers of the Chromium family that read ``~/.pki/nssdb`` on Linux."""
FIREFOX_COMMANDS = ("firefox", "firefox-esr")
MACOS_FIREFOX_APPS = ("Firefox.app", "Firefox Developer Edition.app", "Firefox Nightly.app")
TRUSTED_FOR_WEBSITES = "C,,"
"""certutil trust flags: a CA trusted to issue server certificates, nothing else."""

CHROMIUM_DATABASE = "Chromium NSS database"
FIREFOX_PROFILE = "Firefox profile"
FIREFOX_NOT_RUN = (
    "Firefox is installed but has no profile yet (it makes one on its first run); "
    "start Firefox once, quit it, then run `devstack trust` again"
)
SNAP_CHROMIUM_NOT_RUN = (
    "the Chromium snap has not run yet (its folder is made on the first run); "
    "start Chromium once, quit it, then run `devstack trust` again"
)


@dataclass(frozen=True)
class NssStore:
    """One NSS database a browser reads, whether or not it exists yet."""

    browser: str
    """Whose it is, as the report shows it: ``Chromium NSS database``, ``Firefox profile``."""
    folder: Path
    is_creatable: bool = False
    """devstack makes the database when it is missing (Chromium's shared one)."""
    missing: str = ""
    """When it is missing and devstack does not make it: why, and what the user can do."""

    @property
    def description(self) -> str:
        return f"{self.browser} {self.folder}"

    @property
    def exists(self) -> bool:
        return (self.folder / "cert9.db").is_file()


def find_nss_stores(
    home: Path | None = None, *, platform: str = sys.platform
) -> tuple[NssStore, ...]:
    """The databases that exist under ``home``, plus those of installed browsers that do not yet
    (Chromium's, to be made; Firefox without a profile, to be explained)."""
    home = home if home is not None else Path.home()
    stores = _existing_stores(home)
    known = {store.folder for store in stores}
    if platform != "darwin":
        stores.extend(s for s in _chromium_stores(home) if s.folder not in known)
    if not any(s.browser == FIREFOX_PROFILE for s in stores):
        profiles = _firefox_profiles(home, platform)
        if profiles is not None:
            stores.append(NssStore("Firefox", profiles, missing=FIREFOX_NOT_RUN))
    return tuple(stores)


def find_nss_databases(home: Path | None = None) -> tuple[Path, ...]:
    """NSS databases (folders holding ``cert9.db``) of Chromium and Firefox profiles."""
    return tuple(s.folder for s in _existing_stores(home if home is not None else Path.home()))


def certutil_missing(platform: str = sys.platform) -> str:
    """What to do when ``certutil`` is not installed."""
    if platform == "darwin":
        return "certutil not found; `brew install nss` installs it, then run `devstack trust` again"
    return (
        "certutil not found; install libnss3-tools (Debian/Ubuntu), nss-tools (Fedora/RHEL), "
        "mozilla-nss-tools (openSUSE) or nss (Arch), then run `devstack trust` again"
    )


# --- certutil -----------------------------------------------------------------------------------


def create_command(certutil: str, db: Path) -> list[str]:
    return [certutil, "-N", "-d", f"sql:{db}", "--empty-password"]


def add_command(certutil: str, db: Path, nickname: str, cert: Path) -> list[str]:
    trust = ["-t", TRUSTED_FOR_WEBSITES]
    return [certutil, "-A", "-d", f"sql:{db}", "-n", nickname, *trust, "-i", str(cert)]


def create(certutil: str, db: Path) -> None:
    """Make an empty database without a password, its missing folders 0700 as Chromium makes
    them. Refuses a folder of another user (``sudo devstack trust`` with the user's HOME would
    leave them a database their browser cannot open)."""
    missing = [folder for folder in (db, *db.parents) if not folder.exists()]
    nearest = missing[-1].parent if missing else db
    owner = nearest.stat().st_uid
    if owner != os.geteuid():
        raise PermissionError(
            f"{nearest} belongs to uid {owner}, not to this user; "
            "run `devstack trust` as that user (without sudo)"
        )
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
        folder.chmod(0o700)  # whatever the umask
    run(create_command(certutil, db))


def contains(certutil: str, db: Path, nickname: str) -> bool:
    command = [certutil, "-L", "-d", f"sql:{db}", "-n", nickname]
    done = spawn(command)
    if done.returncode == 0:
        return True
    if "PR_FILE_NOT_FOUND_ERROR" in done.stderr or "could not find" in done.stderr.lower():
        return False
    raise CommandFailed(failure(command, done))


def add(certutil: str, db: Path, nickname: str, cert: Path) -> None:
    run(add_command(certutil, db, nickname, cert))


def remove(certutil: str, db: Path, nickname: str) -> None:
    run([certutil, "-D", "-d", f"sql:{db}", "-n", nickname])


def by_hand(db: Path, nickname: str, cert: Path) -> list[str]:
    """The commands that make ``db`` and trust ``cert`` in it, for a user to run."""
    return [
        f"mkdir -p -m 700 {shlex.quote(str(db))}",
        shlex.join(create_command("certutil", db)),
        shlex.join(add_command("certutil", db, nickname, cert)),
    ]


# --- where browsers look ------------------------------------------------------------------------


def _existing_stores(home: Path) -> list[NssStore]:
    candidates = [
        NssStore(CHROMIUM_DATABASE, home / ".pki" / "nssdb"),
        NssStore(CHROMIUM_DATABASE, home / "snap" / "chromium" / "current" / ".pki" / "nssdb"),
    ]
    for profiles in (
        home / ".mozilla" / "firefox",
        home / "snap" / "firefox" / "common" / ".mozilla" / "firefox",
        home / "Library" / "Application Support" / "Firefox" / "Profiles",
    ):
        if profiles.is_dir():
            candidates.extend(NssStore(FIREFOX_PROFILE, p) for p in sorted(profiles.glob("*/")))
    return [store for store in candidates if store.exists]


def _chromium_stores(home: Path) -> list[NssStore]:
    found = [Path(p) for p in map(shutil.which, CHROMIUM_COMMANDS) if p is not None]
    stores = []
    if any(not _is_snap(path) for path in found):
        stores.append(NssStore(CHROMIUM_DATABASE, home / ".pki" / "nssdb", is_creatable=True))
    if any(_is_snap(path) for path in found):
        snap = home / "snap" / "chromium" / "current"
        stores.append(
            NssStore(
                CHROMIUM_DATABASE,
                snap / ".pki" / "nssdb",
                is_creatable=snap.is_dir(),
                missing=SNAP_CHROMIUM_NOT_RUN,
            )
        )
    return stores


def _firefox_profiles(home: Path, platform: str) -> Path | None:
    """Where an installed Firefox keeps its profiles; None when no Firefox is installed."""
    if platform == "darwin":
        apps = (Path("/Applications"), home / "Applications")
        if any((folder / app).is_dir() for folder in apps for app in MACOS_FIREFOX_APPS):
            return home / "Library" / "Application Support" / "Firefox" / "Profiles"
        return None
    found = [Path(p) for p in map(shutil.which, FIREFOX_COMMANDS) if p is not None]
    if not found:
        return None
    if all(_is_snap(path) for path in found):
        return home / "snap" / "firefox" / "common" / ".mozilla" / "firefox"
    return home / ".mozilla" / "firefox"


def _is_snap(executable: Path) -> bool:
    return executable.parts[:2] == ("/", "snap")
