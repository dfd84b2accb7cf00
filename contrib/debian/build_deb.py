"""Build pazuzu_<version>_<arch>.deb with dpkg-deb from a staging tree (`make deb`).

The package holds a self-contained virtual environment in /opt/pazuzu, made with Debian's
/usr/bin/python3 and the checkout installed into it (not editable), plus the links
/usr/bin/pazuzu and /usr/sbin/pazuzud, the systemd units, the configuration in /etc/pazuzu,
the sysvinit script, man pages, shell completions and the examples.

A virtual environment is not relocatable (its scripts name their interpreter by absolute path),
so it is built at its final path: in a private mount namespace (`unshare --mount`) the host's
/opt is covered by an overlay whose upper layer is a temporary directory, and the staging
tree's opt/pazuzu is bound over /opt/pazuzu. pip still sees the host's /opt (where a local wheel
mirror may live), and nothing on the host changes; the namespace ends with the build. As root
that needs nothing more; otherwise a user namespace (`unshare --map-root-user`) stands in.

Standard library only: it runs on Debian's python3, without the checkout's virtual environment.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Final

HERE: Final = Path(__file__).resolve().parent
CHECKOUT: Final = HERE.parents[1]

PACKAGE: Final = "pazuzu"
PREFIX: Final = Path("/opt/pazuzu")
DAEMON: Final = Path("/usr/sbin/pazuzud")
CLI: Final = Path("/usr/bin/pazuzu")
UNIT_DIR: Final = Path("/lib/systemd/system")
DOC_DIR: Final = Path("/usr/share/doc/pazuzu")
EXAMPLES_DIR: Final = DOC_DIR / "examples"
BUILD_PYTHON: Final = "/usr/bin/python3"
# What pip needs from the checkout to build pazuzu; nothing else goes into the package's venv.
SOURCES: Final = ("pyproject.toml", "README.md", "pazuzu")
# Example applications in contrib/, and the directory each gets under EXAMPLES_DIR.
EXAMPLE_APPS: Final = {
    "example": "example",
    "examples/ruby": "ruby",
    "examples/node": "node",
    "examples/notify": "notify",
}
COMPLETIONS: Final = {
    "pazuzu.bash": Path("/usr/share/bash-completion/completions/pazuzu"),
    "_pazuzu": Path("/usr/share/zsh/vendor-completions/_pazuzu"),
    "pazuzu.fish": Path("/usr/share/fish/vendor_completions.d/pazuzu.fish"),
}
MAINTAINER_SCRIPTS: Final = ("postinst", "prerm", "postrm")
BUILD_TIMEOUT: Final = 900.0

CONF_D_README: Final = """\
One file per application, NAME.conf, each merged over /etc/pazuzu/pazuzu.conf in sorted order
(its `include: conf.d/*.conf`). Examples, one per application, are in
/usr/share/doc/pazuzu/examples/conf.d/: copy one here, check it with `pazuzu check`, and apply
it with `pazuzu reload`.
"""

COPYRIGHT: Final = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: pazuzu

Files: *
Copyright: the pazuzu authors
License: MIT
 Permission is hereby granted, free of charge, to any person obtaining a copy of this software
 and associated documentation files (the "Software"), to deal in the Software without
 restriction, including without limitation the rights to use, copy, modify, merge, publish,
 distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
 Software is furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in all copies or
 substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING
 BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
 NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
 DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
 OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""

_EXEC_START = re.compile(r"^ExecStart=\S+", re.MULTILINE)
_ADJUST_COMMENT = re.compile(r"^# Adjust to where pazuzud is installed.*\n", re.MULTILINE)
_PROCFILE_KEY = re.compile(r"^(?P<lead>\s*procfile:\s*)(?P<path>[^\s#]+)", re.MULTILINE)


class BuildError(Exception):
    """The package cannot be built; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Package:
    """What DEBIAN/control says about the package."""

    version: str
    architecture: str
    python: tuple[int, int]
    installed_size_kib: int
    maintainer: str


# Pure parts: text in, text out ----------------------------------------------------------


def project_version(pyproject: str) -> str:
    """The version in pyproject.toml's [project] table."""
    version = tomllib.loads(pyproject).get("project", {}).get("version")
    if not isinstance(version, str) or not version:
        raise BuildError("pyproject.toml has no [project] version")
    return version


def packaged_unit(text: str) -> str:
    """units/pazuzud.service with ExecStart pointing at the packaged daemon."""
    if not _EXEC_START.search(text):
        raise BuildError("units/pazuzud.service has no ExecStart= line to point at the package")
    return _ADJUST_COMMENT.sub("", _EXEC_START.sub(f"ExecStart={DAEMON}", text, count=1))


def packaged_example_config(text: str, conf_dir: Path, contrib: Path) -> str:
    """A conf.d example with its relative `procfile:` made the installed example's path.

    In contrib/ a conf.d file names its application relative to itself
    (`../../../examples/node`); installed, the application is under EXAMPLES_DIR.
    """

    def installed(match: re.Match[str]) -> str:
        source = (conf_dir / match["path"]).resolve()
        relative = source.relative_to(contrib.resolve()).as_posix()
        if relative not in EXAMPLE_APPS:
            raise BuildError(f"{relative} is not one of the packaged examples {list(EXAMPLE_APPS)}")
        return f"{match['lead']}{EXAMPLES_DIR / EXAMPLE_APPS[relative]}"

    rewritten, count = _PROCFILE_KEY.subn(installed, text)
    if count == 0:
        raise BuildError(f"a conf.d example in {conf_dir} names no procfile")
    return rewritten


def python_depends(python: tuple[int, int]) -> str:
    """The python3 versions the virtual environment runs on: the build's minor version only.

    The venv's interpreter is /usr/bin/python3 and its packages are in lib/python3.X: another
    minor version of python3 cannot run them.
    """
    major, minor = python
    return f"python3 (>= {major}.{minor}), python3 (<< {major}.{minor + 1})"


def control_file(template: str, package: Package) -> str:
    """DEBIAN/control from contrib/debian/control.in."""
    return Template(template).substitute(
        version=package.version,
        architecture=package.architecture,
        installed_size=package.installed_size_kib,
        maintainer=package.maintainer,
        python_depends=python_depends(package.python),
    )


def deb_name(version: str, architecture: str) -> str:
    return f"{PACKAGE}_{version}_{architecture}.deb"


# The staging tree ------------------------------------------------------------------------


def inside(root: Path, path: Path) -> Path:
    """Where the absolute `path` of the installed system is in the staging tree `root`."""
    return root / path.relative_to("/")


def install_file(source: Path, target: Path, mode: int = 0o644) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    target.chmod(mode)


def install_text(text: str, target: Path, mode: int = 0o644) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


def install_gzipped(source: Path, target: Path) -> None:
    """gzip -9n: no name and no time in the header, so equal inputs give equal packages."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with (
        target.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
    ):
        gz.write(source.read_bytes())
    target.chmod(0o644)


def install_symlink(link: Path, pointing_to: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(pointing_to)


def install_tree(source: Path, target: Path) -> None:
    """Copy an example application, without caches; scripts keep their executable bit."""
    for path in sorted(source.rglob("*")):
        if "__pycache__" in path.parts or path.is_dir():
            continue
        mode = 0o755 if os.access(path, os.X_OK) else 0o644
        install_file(path, target / path.relative_to(source), mode)


def stage_files(root: Path, checkout: Path) -> list[Path]:
    """Everything but the virtual environment; returns the conffiles (absolute, installed)."""
    contrib = checkout / "contrib"
    install_symlink(inside(root, CLI), PREFIX / "bin" / "pazuzu")
    install_symlink(inside(root, DAEMON), PREFIX / "bin" / "pazuzud")

    unit = packaged_unit((checkout / "units" / "pazuzud.service").read_text())
    install_text(unit, inside(root, UNIT_DIR / "pazuzud.service"))
    install_file(checkout / "units" / "pazuzu.slice", inside(root, UNIT_DIR / "pazuzu.slice"))

    conffiles = {
        Path("/etc/pazuzu/pazuzu.conf"): (contrib / "etc" / "pazuzu" / "pazuzu.conf", 0o644),
        Path("/etc/default/pazuzud"): (contrib / "debian" / "pazuzud.default", 0o644),
        Path("/etc/init.d/pazuzud"): (contrib / "init.d" / "pazuzud", 0o755),
    }
    for installed, (source, mode) in conffiles.items():
        install_file(source, inside(root, installed), mode)
    conf_d_readme = Path("/etc/pazuzu/conf.d/README")
    install_text(CONF_D_README, inside(root, conf_d_readme))

    for page in sorted((contrib / "man").glob("*.[0-9]")):
        section = page.suffix.removeprefix(".")
        install_gzipped(page, inside(root, Path(f"/usr/share/man/man{section}/{page.name}.gz")))
    for name, installed in COMPLETIONS.items():
        install_file(contrib / "completions" / name, inside(root, installed))

    doc = inside(root, DOC_DIR)
    install_text(COPYRIGHT, doc / "copyright")
    install_gzipped(checkout / "README.md", doc / "README.md.gz")
    install_gzipped(checkout / "CHANGELOG.md", doc / "changelog.gz")
    install_file(contrib / "README.md", doc / "README.contrib.md")
    examples = inside(root, EXAMPLES_DIR)
    for app_dir, name in EXAMPLE_APPS.items():
        install_tree(contrib / app_dir, examples / name)
    conf_d = contrib / "etc" / "pazuzu" / "conf.d"
    for conf in sorted(conf_d.glob("*.conf")):
        text = packaged_example_config(conf.read_text(), conf_d, contrib)
        install_text(text, examples / "conf.d" / conf.name)

    return sorted([*conffiles, conf_d_readme])


def copy_sources(checkout: Path, target: Path) -> None:
    """The files pip builds pazuzu from, so that the build leaves nothing in the checkout."""
    for name in SOURCES:
        source = checkout / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target / name)


VENV_SCRIPT: Final = """
set -eu
mount -t overlay pazuzu-build-opt -o "lowerdir=/opt,upperdir=$UPPER,workdir=$WORK" /opt
mkdir -p "$PREFIX"
mount --bind "$STAGED_PREFIX" "$PREFIX"
"$BUILD_PYTHON" -m venv "$PREFIX"
"$PREFIX/bin/pip" install --quiet --disable-pip-version-check --no-warn-script-location "$SRC"
# The package runs pazuzu; installing into its venv is the package manager's job.
"$PREFIX/bin/pip" uninstall --quiet --yes pip setuptools
# Byte-code for what pip installed from an sdist too, so the daemon writes none at run time.
"$PREFIX/bin/python" -m compileall -q "$PREFIX/lib"
"""


def build_venv(stage: Path, root: Path, checkout: Path) -> None:
    """Create PREFIX in the staging tree, at its real path, in a private mount namespace."""
    src = stage / "src"
    src.mkdir()
    copy_sources(checkout, src)
    upper, work = stage / "opt-upper", stage / "opt-work"
    upper.mkdir()
    work.mkdir()
    staged_prefix = inside(root, PREFIX)
    staged_prefix.mkdir(parents=True)
    unshare = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        unshare.insert(1, "--map-root-user")
    env = {
        **os.environ,
        "UPPER": str(upper),
        "WORK": str(work),
        "PREFIX": str(PREFIX),
        "STAGED_PREFIX": str(staged_prefix),
        "BUILD_PYTHON": BUILD_PYTHON,
        "SRC": str(src),
    }
    # Whatever virtualenv the caller runs in must not leak into the package's.
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PIP_USER", "PIP_TARGET", "PIP_PREFIX"):
        env.pop(name, None)
    run([*unshare, "/bin/sh", "-c", VENV_SCRIPT], env=env, what="building the virtualenv")
    if not (staged_prefix / "bin" / "pazuzud").exists():
        raise BuildError(f"the virtualenv build left no bin/pazuzud in {staged_prefix}")


def installed_size_kib(root: Path) -> int:
    """Installed-Size as dpkg-gencontrol counts it: 1 KiB per directory and symlink, files
    rounded up to whole KiB."""
    total = 0
    for path in root.rglob("*"):
        if "DEBIAN" in path.relative_to(root).parts[:1]:
            continue
        if path.is_file() and not path.is_symlink():
            total += -(-path.stat().st_size // 1024)
        else:
            total += 1
    return total


def md5sums(root: Path, conffiles: Iterable[Path]) -> str:
    """DEBIAN/md5sums for every regular file but the conffiles (dpkg checks those itself)."""
    skip = {inside(root, conffile) for conffile in conffiles}
    lines = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0] == "DEBIAN" or path in skip:
            continue
        if path.is_file() and not path.is_symlink():
            digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
            lines.append(f"{digest}  {relative.as_posix()}\n")
    return "".join(lines)


def write_control(root: Path, package: Package, conffiles: Sequence[Path]) -> None:
    debian = root / "DEBIAN"
    template = (HERE / "control.in").read_text()
    install_text(control_file(template, package), debian / "control")
    install_text("".join(f"{path}\n" for path in conffiles), debian / "conffiles")
    install_text(md5sums(root, conffiles), debian / "md5sums")
    for script in MAINTAINER_SCRIPTS:
        install_file(HERE / script, debian / script, 0o755)


# Running it ------------------------------------------------------------------------------


def run(args: Sequence[str], *, what: str, env: dict[str, str] | None = None) -> str:
    """Run a build step; BuildError with its output when it fails."""
    try:
        result = subprocess.run(
            list(args), env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
        )
    except FileNotFoundError:
        raise BuildError(f"{what}: {args[0]} is not installed (bash .ci/setup)") from None
    except subprocess.TimeoutExpired:
        raise BuildError(f"{what}: took longer than {BUILD_TIMEOUT:g} s") from None
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise BuildError(f"{what} failed (exit {result.returncode}):\n{output}")
    return result.stdout


def check_tools() -> None:
    for tool in ("dpkg-deb", "dpkg", "unshare", "mount"):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} is not installed")
    if not Path(BUILD_PYTHON).exists():
        raise BuildError(f"{BUILD_PYTHON} is missing: apt-get install python3 python3-venv")
    if not Path("/opt").is_dir():
        raise BuildError("/opt does not exist: the virtualenv is built at /opt/pazuzu")


def build_python_version() -> tuple[int, int]:
    out = run(
        [BUILD_PYTHON, "-c", "import sys; print(*sys.version_info[:2])"],
        what=f"asking {BUILD_PYTHON} its version",
    )
    major, minor = out.split()
    return int(major), int(minor)


def remove_tree(path: Path) -> None:
    """rmtree that also gets through overlayfs work directories left without permissions."""

    def unlock(_function: object, failed: str, _exc: object) -> None:
        Path(failed).parent.chmod(0o755)
        if Path(failed).is_dir():
            Path(failed).chmod(0o755)
            shutil.rmtree(failed, ignore_errors=True)
        else:
            Path(failed).unlink(missing_ok=True)

    shutil.rmtree(path, onerror=unlock)


def build(checkout: Path, output: Path, *, keep_stage: bool = False) -> Path:
    """Build the package into `output`; return the .deb's path."""
    check_tools()
    os.umask(0o022)
    version = project_version((checkout / "pyproject.toml").read_text())
    architecture = run(["dpkg", "--print-architecture"], what="dpkg --print-architecture").strip()
    output.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix="pazuzu-deb-", dir=output))
    try:
        root = stage / "root"
        root.mkdir()
        root.chmod(0o755)
        build_venv(stage, root, checkout)
        conffiles = stage_files(root, checkout)
        maintainer = os.environ.get("DEB_MAINTAINER", "pazuzu maintainers <pazuzu@invalid>")
        package = Package(
            version=version,
            architecture=architecture,
            python=build_python_version(),
            installed_size_kib=installed_size_kib(root),
            maintainer=maintainer,
        )
        write_control(root, package, conffiles)
        deb = output / deb_name(version, architecture)
        run(
            ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(deb)],
            what="dpkg-deb --build",
        )
        return deb
    finally:
        if keep_stage:
            print(f"build-deb: staging tree kept in {stage}", file=sys.stderr)
        else:
            remove_tree(stage)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="build-deb", description="Build the pazuzu Debian package with dpkg-deb."
    )
    parser.add_argument(
        "--output", type=Path, default=CHECKOUT / "build", help="where the .deb goes (./build)"
    )
    parser.add_argument("--checkout", type=Path, default=CHECKOUT, help=argparse.SUPPRESS)
    parser.add_argument("--keep-stage", action="store_true", help="keep the staging tree")
    args = parser.parse_args(argv)
    try:
        deb = build(args.checkout.resolve(), args.output.resolve(), keep_stage=args.keep_stage)
    except BuildError as error:
        print(f"build-deb: {error}", file=sys.stderr)
        return 1
    print(deb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
