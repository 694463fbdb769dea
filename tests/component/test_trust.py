"""Installing the CA into trust stores that live in temporary folders: a sandboxed Debian store
rebuilt by the real update-ca-certificates, and NSS databases made with certutil, some of them by
devstack itself in a temporary HOME where a browser is installed but never ran. The machine's own
stores are never touched (the first fixture checks that)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.tls import ca as tls
from devstack.tls import nss, trust
from devstack.tls.trust import Outcome

CERTUTIL = shutil.which("certutil")
needs_certutil = pytest.mark.skipif(
    CERTUTIL is None, reason="certutil is not installed (apt-get install libnss3-tools)"
)


@pytest.fixture(autouse=True)
def real_stores_untouched() -> Iterator[None]:
    """Fail if a test left a devstack CA in the machine's own anchor folders."""

    def ours() -> set[Path]:
        return {
            path
            for folder, *_ in trust.LINUX_ANCHOR_FOLDERS
            if folder.is_dir()
            for path in folder.glob("devstack-*.crt")
        }

    before = ours()
    yield
    assert ours() == before


@pytest.fixture
def ca() -> tls.CertificateAuthority:
    return tls.load_or_create_ca()


class Sandbox:
    """A Debian trust store in a temporary folder: anchors in, bundle out."""

    def __init__(self, root: Path) -> None:
        root.mkdir()
        self.anchors = root / "local"
        self.etc = root / "etc"
        for folder in (self.anchors, self.etc, root / "shared", root / "hooks"):
            folder.mkdir()
        # Like the real store, the bundle holds other CAs (Debian's are listed in the conf).
        self.other_ca = tls.load_or_create_ca(root / "other-home")
        shutil.copy(self.other_ca.cert_path, root / "shared" / "other.crt")
        (root / "ca-certificates.conf").write_text("other.crt\n")
        self.bundle = self.etc / "ca-certificates.crt"
        self.refresh = (
            "update-ca-certificates",
            "--localcertsdir", str(self.anchors),
            "--etccertsdir", str(self.etc),
            "--certsdir", str(root / "shared"),
            "--certsconf", str(root / "ca-certificates.conf"),
            "--hooksdir", str(root / "hooks"),
        )  # fmt: skip


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    if shutil.which("update-ca-certificates") is None:
        pytest.skip("update-ca-certificates is not installed (Debian's ca-certificates)")
    return Sandbox(tmp_path / "store")


@pytest.fixture
def refresh_log(tmp_path: Path) -> tuple[tuple[str, ...], Path]:
    """A refresh command that only records that it ran."""
    log = tmp_path / "refreshed.log"
    script = f"open({str(log)!r}, 'a').write('ran\\n')"
    return (sys.executable, "-c", script), log


def runs(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def outcomes(report: trust.TrustReport) -> list[Outcome]:
    return [step.outcome for step in report.steps]


# --- the system store ---------------------------------------------------------------------------


def test_install_puts_the_ca_in_the_bundle_and_uninstall_takes_it_out(
    ca: tls.CertificateAuthority, sandbox: Sandbox
) -> None:
    leaf = tls.ServerCertificate(ca, ["api.localhost"])
    report = trust.install(
        ca, system_dir=sandbox.anchors, refresh_command=sandbox.refresh, nss_dbs=()
    )

    assert outcomes(report)[0] is Outcome.INSTALLED, report.lines()
    anchor = sandbox.anchors / f"devstack-{ca.short_fingerprint}.crt"
    assert anchor.read_bytes() == ca.pem
    assert oct(anchor.stat().st_mode & 0o777) == oct(0o644)
    assert ca.pem.decode() in sandbox.bundle.read_text()
    verify = ["openssl", "verify", "-CAfile", str(sandbox.bundle), str(leaf.path)]
    assert subprocess.run(verify, capture_output=True, check=False).returncode == 0

    # As the detected Debian store does it: --fresh also drops the links to the removed anchor.
    report = trust.uninstall(
        ca, system_dir=sandbox.anchors, refresh_command=(*sandbox.refresh, "--fresh"), nss_dbs=()
    )

    assert outcomes(report)[0] is Outcome.REMOVED, report.lines()
    assert not anchor.exists()
    assert ca.pem.decode() not in sandbox.bundle.read_text()
    assert sandbox.other_ca.pem.decode() in sandbox.bundle.read_text()
    assert [p for p in sandbox.etc.iterdir() if p.is_symlink() and not p.exists()] == []
    assert subprocess.run(verify, capture_output=True, check=False).returncode != 0


def test_installing_twice_is_harmless(
    ca: tls.CertificateAuthority, tmp_path: Path, refresh_log: tuple[tuple[str, ...], Path]
) -> None:
    command, log = refresh_log
    anchors = tmp_path / "anchors"
    anchors.mkdir()

    first = trust.install(ca, system_dir=anchors, refresh_command=command, nss_dbs=())
    second = trust.install(ca, system_dir=anchors, refresh_command=command, nss_dbs=())

    assert outcomes(first)[0] is Outcome.INSTALLED
    assert outcomes(second)[0] is Outcome.ALREADY_TRUSTED
    assert "already trusted" in "\n".join(second.lines())
    assert runs(log) == 1
    assert [p.name for p in anchors.iterdir()] == [f"devstack-{ca.short_fingerprint}.crt"]


def test_uninstall_removes_only_what_install_added(
    ca: tls.CertificateAuthority, tmp_path: Path, refresh_log: tuple[tuple[str, ...], Path]
) -> None:
    command, log = refresh_log
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    (anchors / "company-root.crt").write_text("someone else's")

    trust.install(ca, system_dir=anchors, refresh_command=command, nss_dbs=())
    removed = trust.uninstall(ca, system_dir=anchors, refresh_command=command, nss_dbs=())
    again = trust.uninstall(ca, system_dir=anchors, refresh_command=command, nss_dbs=())

    assert outcomes(removed)[0] is Outcome.REMOVED
    assert outcomes(again)[0] is Outcome.NOT_PRESENT
    assert [p.name for p in anchors.iterdir()] == ["company-root.crt"]
    assert runs(log) == 2


def test_an_explicit_folder_without_a_command_runs_nothing(
    ca: tls.CertificateAuthority, tmp_path: Path
) -> None:
    report = trust.install(ca, system_dir=tmp_path, nss_dbs=())
    [step] = report.steps
    assert step.outcome is Outcome.INSTALLED and "ran" not in step.detail


def test_a_failing_refresh_is_reported_with_the_command_to_run(
    ca: tls.CertificateAuthority, tmp_path: Path
) -> None:
    fail = (sys.executable, "-c", "import sys; sys.exit('bundle is locked')")
    report = trust.install(ca, system_dir=tmp_path, refresh_command=fail, nss_dbs=())
    [step] = report.steps
    assert step.outcome is Outcome.FAILED and not report.is_complete
    assert "bundle is locked" in step.detail and "sudo " in step.detail


def test_no_permission_suggests_sudo(ca: tls.CertificateAuthority, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root writes through any mode bits; sysfs refuses to create files even for root.
        locked = Path("/sys")
        if not locked.is_dir():
            pytest.skip("running as root without /sys: no folder root cannot write")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
    before = sorted(locked.iterdir())

    report = trust.install(ca, system_dir=locked, refresh_command=("refresh-bundle",), nss_dbs=())

    [step] = report.steps
    assert step.outcome is Outcome.FAILED
    assert "permission denied" in step.detail
    assert f"sudo install -m 644 {ca.cert_path}" in step.detail
    assert "sudo refresh-bundle" in step.detail
    assert sorted(locked.iterdir()) == before


def test_the_report_always_says_how_to_trust_by_hand(
    ca: tls.CertificateAuthority, tmp_path: Path
) -> None:
    lines = trust.install(ca, system_dir=tmp_path, nss_dbs=()).lines()
    text = "\n".join(lines)
    assert lines[0] == f"{ca.name}: {ca.cert_path}"
    for variable in ("NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        assert f"export {variable}={ca.cert_path}" in text
    undo = "\n".join(trust.uninstall(ca, system_dir=tmp_path, nss_dbs=()).lines())
    assert "unset NODE_EXTRA_CA_CERTS SSL_CERT_FILE REQUESTS_CA_BUNDLE" in undo


# --- NSS databases (Chromium, Firefox) ----------------------------------------------------------


def new_nss_db(folder: Path) -> Path:
    assert CERTUTIL is not None
    folder.mkdir(parents=True)
    subprocess.run(
        [CERTUTIL, "-N", "--empty-password", "-d", f"sql:{folder}"], check=True, capture_output=True
    )
    return folder


def nss_trust_flags(db: Path, nickname: str) -> str | None:
    assert CERTUTIL is not None
    listing = subprocess.run(
        [CERTUTIL, "-L", "-d", f"sql:{db}"], check=True, capture_output=True, text=True
    ).stdout
    for line in listing.splitlines():
        if line.startswith(nickname):
            return line[len(nickname) :].strip()
    return None


@needs_certutil
def test_nss_databases_trust_the_ca_for_servers_and_forget_it_again(
    ca: tls.CertificateAuthority, tmp_path: Path
) -> None:
    assert CERTUTIL is not None
    chromium = new_nss_db(tmp_path / ".pki" / "nssdb")
    firefox = new_nss_db(tmp_path / ".mozilla" / "firefox" / "abcd.default-release")
    dbs = [chromium, firefox]
    nickname = trust.nss_nickname(ca)

    installed = trust.install(ca, system_dir=None, nss_dbs=dbs, certutil=CERTUTIL)
    again = trust.install(ca, system_dir=None, nss_dbs=dbs, certutil=CERTUTIL)

    assert outcomes(installed) == [Outcome.INSTALLED, Outcome.INSTALLED], installed.lines()
    assert outcomes(again) == [Outcome.ALREADY_TRUSTED, Outcome.ALREADY_TRUSTED]
    assert [nss_trust_flags(db, nickname) for db in dbs] == ["C,,", "C,,"]

    # NSS itself accepts a devstack leaf as an SSL server certificate.
    leaf = tls.ServerCertificate(ca, ["api.localhost"])
    leaf_pem = tmp_path / "leaf.pem"
    leaf_pem.write_bytes(leaf.path.read_bytes().split(b"-----END PRIVATE KEY-----\n")[1])
    check = [CERTUTIL, "-d", f"sql:{firefox}"]
    subprocess.run([*check, "-A", "-n", "leaf", "-t", ",,", "-i", str(leaf_pem)], check=True)
    verified = subprocess.run(
        [*check, "-V", "-u", "V", "-n", "leaf"], capture_output=True, text=True, check=False
    )
    assert "certificate is valid" in verified.stdout, verified.stdout + verified.stderr
    subprocess.run([*check, "-D", "-n", "leaf"], check=True)

    removed = trust.uninstall(ca, system_dir=None, nss_dbs=dbs, certutil=CERTUTIL)
    gone = trust.uninstall(ca, system_dir=None, nss_dbs=dbs, certutil=CERTUTIL)

    assert outcomes(removed) == [Outcome.REMOVED, Outcome.REMOVED]
    assert outcomes(gone) == [Outcome.NOT_PRESENT, Outcome.NOT_PRESENT]
    assert [nss_trust_flags(db, nickname) for db in dbs] == [None, None]


@needs_certutil
def test_nss_databases_are_found_in_browser_profiles(tmp_path: Path) -> None:
    chromium = new_nss_db(tmp_path / ".pki" / "nssdb")
    firefox = new_nss_db(tmp_path / ".mozilla" / "firefox" / "abcd.default-release")
    (tmp_path / ".mozilla" / "firefox" / "no-db-here").mkdir()
    assert nss.find_nss_databases(tmp_path) == (chromium, firefox)


def test_without_certutil_the_report_names_the_package(
    ca: tls.CertificateAuthority, tmp_path: Path
) -> None:
    report = trust.install(ca, system_dir=None, nss_dbs=[tmp_path], certutil=None)
    [step] = report.steps
    assert step.outcome is Outcome.SKIPPED and "libnss3-tools" in step.detail
    assert report.is_complete
    assert any("libnss3-tools" in line for line in report.lines())


def test_a_broken_nss_database_is_a_reported_failure(
    ca: tls.CertificateAuthority, tmp_path: Path
) -> None:
    fake = tmp_path / "certutil"
    fake.write_text(
        "#!/bin/sh\necho 'certutil: function failed: SEC_ERROR_BAD_DATABASE' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    report = trust.install(ca, system_dir=None, nss_dbs=[tmp_path], certutil=str(fake))
    [step] = report.steps
    assert step.outcome is Outcome.FAILED and "SEC_ERROR_BAD_DATABASE" in step.detail


# --- browsers installed on an account where they never ran --------------------------------------


@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME, and a PATH holding only the browsers a test installs with :func:`install`."""
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    return home


def install_browser(home: Path, name: str) -> None:
    """Put a stand-in for the browser ``name`` on the fresh HOME's PATH."""
    executable = home.parent / "bin" / name
    executable.write_text("#!/bin/sh\nexit 0\n")
    executable.chmod(0o755)


def folder_mode(path: Path) -> str:
    return oct(path.stat().st_mode & 0o777)


@needs_certutil
@pytest.mark.parametrize("name", ["chromium", "chromium-browser", "google-chrome"])
def test_a_chromium_that_never_ran_gets_a_database_that_trusts_the_ca(
    ca: tls.CertificateAuthority, fresh_home: Path, name: str
) -> None:
    install_browser(fresh_home, name)
    nssdb = fresh_home / ".pki" / "nssdb"

    installed = trust.install(ca, system_dir=None, certutil=CERTUTIL)

    [step] = installed.steps
    assert step.outcome is Outcome.INSTALLED, installed.lines()
    assert step.store == f"Chromium NSS database {nssdb}"
    assert "made the database" in step.detail
    assert installed.is_complete
    assert [folder_mode(nssdb.parent), folder_mode(nssdb)] == [oct(0o700), oct(0o700)]
    assert nss_trust_flags(nssdb, trust.nss_nickname(ca)) == "C,,"

    again = trust.install(ca, system_dir=None, certutil=CERTUTIL)
    removed = trust.uninstall(ca, system_dir=None, certutil=CERTUTIL)
    gone = trust.uninstall(ca, system_dir=None, certutil=CERTUTIL)

    assert outcomes(again) == [Outcome.ALREADY_TRUSTED]
    assert outcomes(removed) == [Outcome.REMOVED]
    assert outcomes(gone) == [Outcome.NOT_PRESENT]
    # The database stays: Chromium owns it and keeps more than devstack's CA in it.
    assert (nssdb / "cert9.db").is_file()
    assert nss_trust_flags(nssdb, trust.nss_nickname(ca)) is None


@needs_certutil
def test_uninstall_never_makes_a_database(ca: tls.CertificateAuthority, fresh_home: Path) -> None:
    install_browser(fresh_home, "chromium")

    report = trust.uninstall(ca, system_dir=None, certutil=CERTUTIL)

    [step] = report.steps
    assert step.outcome is Outcome.NOT_PRESENT and report.is_complete
    assert list(fresh_home.iterdir()) == []


def test_a_firefox_that_never_ran_is_explained_not_guessed(
    ca: tls.CertificateAuthority, fresh_home: Path
) -> None:
    install_browser(fresh_home, "firefox")

    report = trust.install(ca, system_dir=None, certutil=CERTUTIL)

    [step] = report.steps
    assert step.outcome is Outcome.SKIPPED and report.is_complete
    assert step.store == f"Firefox {fresh_home / '.mozilla' / 'firefox'}"
    assert "no profile yet" in step.detail and "start Firefox once" in step.detail
    assert "run `devstack trust` again" in step.detail
    assert list(fresh_home.iterdir()) == []


@needs_certutil
def test_a_firefox_profile_and_a_new_chromium_database_both_trust_the_ca(
    ca: tls.CertificateAuthority, fresh_home: Path
) -> None:
    install_browser(fresh_home, "firefox-esr")
    install_browser(fresh_home, "google-chrome-stable")
    profile = new_nss_db(fresh_home / ".mozilla" / "firefox" / "abcd.default-esr")
    nssdb = fresh_home / ".pki" / "nssdb"

    report = trust.install(ca, system_dir=None, certutil=CERTUTIL)

    assert [(s.store, s.outcome) for s in report.steps] == [
        (f"Firefox profile {profile}", Outcome.INSTALLED),
        (f"Chromium NSS database {nssdb}", Outcome.INSTALLED),
    ], report.lines()
    assert [nss_trust_flags(db, trust.nss_nickname(ca)) for db in (profile, nssdb)] == ["C,,"] * 2


def test_without_a_browser_or_a_database_nothing_is_made(
    ca: tls.CertificateAuthority, fresh_home: Path
) -> None:
    report = trust.install(ca, system_dir=None, certutil=CERTUTIL)
    [step] = report.steps
    assert step.outcome is Outcome.SKIPPED
    assert "no Chromium, Chrome or Firefox on PATH" in step.detail
    assert list(fresh_home.iterdir()) == []


def test_a_chromium_without_certutil_names_the_package_and_makes_nothing(
    ca: tls.CertificateAuthority, fresh_home: Path
) -> None:
    install_browser(fresh_home, "chromium")

    report = trust.install(ca, system_dir=None, certutil=None)

    [step] = report.steps
    assert step.outcome is Outcome.SKIPPED
    for package in ("libnss3-tools", "nss-tools", "run `devstack trust` again"):
        assert package in step.detail
    assert list(fresh_home.iterdir()) == []


def test_the_certutil_hint_on_macos_is_homebrew() -> None:
    assert "`brew install nss`" in nss.certutil_missing("darwin")


def test_firefox_on_macos_is_found_in_the_applications_folder(tmp_path: Path) -> None:
    (tmp_path / "Applications" / "Firefox.app").mkdir(parents=True)
    [store] = nss.find_nss_stores(tmp_path, platform="darwin")
    assert store.folder == tmp_path / "Library" / "Application Support" / "Firefox" / "Profiles"
    assert not store.is_creatable and "start Firefox once" in store.missing


def test_the_chromium_snap_reads_its_own_folder_once_it_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snap = {"chromium": "/snap/bin/chromium"}
    monkeypatch.setattr(nss.shutil, "which", snap.get)

    [never_ran] = nss.find_nss_stores(tmp_path, platform="linux")
    (tmp_path / "snap" / "chromium" / "current").mkdir(parents=True)
    [ran] = nss.find_nss_stores(tmp_path, platform="linux")

    folder = tmp_path / "snap" / "chromium" / "current" / ".pki" / "nssdb"
    assert never_ran.folder == folder and not never_ran.is_creatable
    assert "start Chromium once" in never_ran.missing
    assert ran.folder == folder and ran.is_creatable


@needs_certutil
def test_a_home_of_another_user_gets_no_database(
    ca: tls.CertificateAuthority, fresh_home: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can hand a folder to another user")
    os.chown(fresh_home, 65534, 65534)  # nobody, as with `sudo -E devstack trust`
    install_browser(fresh_home, "chromium")

    report = trust.install(ca, system_dir=None, certutil=CERTUTIL)

    [step] = report.steps
    assert step.outcome is Outcome.FAILED and not report.is_complete
    assert "belongs to uid 65534" in step.detail and "without sudo" in step.detail
    assert f"certutil -N -d sql:{fresh_home / '.pki' / 'nssdb'} --empty-password" in step.detail
    assert list(fresh_home.iterdir()) == []


def test_the_system_store_can_be_pointed_at_a_folder(
    ca: tls.CertificateAuthority, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(trust.SYSTEM_DIR_VARIABLE, str(tmp_path))

    installed = trust.install(ca, nss_dbs=())
    removed = trust.uninstall(ca, nss_dbs=())

    assert [(s.store, s.outcome) for s in installed.steps] == [
        (f"system store {tmp_path}", Outcome.INSTALLED)
    ]
    assert "ran" not in installed.steps[0].detail  # no bundle is rebuilt from a chosen folder
    assert outcomes(removed) == [Outcome.REMOVED]
    assert list(tmp_path.iterdir()) == []
