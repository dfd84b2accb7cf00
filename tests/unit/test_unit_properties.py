"""The `systemd:` unit properties: checked at load, merged per worker, encoded for D-Bus."""

from __future__ import annotations

import dataclasses
import importlib.util
import textwrap
from pathlib import Path

import pytest

from pazuzu.config import instance_spec, load_config
from pazuzu.errors import ConfigError
from pazuzu.model import InstanceId, InstanceSpec
from pazuzu.unit_properties import INFINITY, PROPERTIES


def write_config(tmp_path: Path, app: str = "", web: str = "") -> Path:
    """A `shop` application with a `web` and a `queue` worker, and these `systemd:` lines."""
    (tmp_path / "shop").mkdir(exist_ok=True)
    (tmp_path / "shop" / "Procfile").write_text("web: exec serve\nqueue: work\n")
    path = tmp_path / "pazuzu.conf"
    path.write_text(
        "applications:\n  shop:\n    procfile: shop\n"
        + ("    systemd:\n" + textwrap.indent(app, "      ") if app else "")
        + "    workers:\n      web:\n        num_instances: 1\n"
        + ("        systemd:\n" + textwrap.indent(web, "          ") if web else "")
    )
    return path


def specs(path: Path) -> dict[str, InstanceSpec]:
    (app,) = load_config(path).applications
    return {worker.name: instance_spec(app, worker, 1) for worker in app.workers}


def test_worker_properties_override_the_applications_one_by_one(tmp_path: Path) -> None:
    """The application's properties apply to every worker; a worker's own win by name."""
    path = write_config(
        tmp_path,
        app="PrivateTmp: true\nProtectSystem: strict\n",
        web="ProtectSystem: full\nNoNewPrivileges: true\nReadWritePaths: [/srv/tmp, -/var/x]\n",
    )
    by_worker = specs(path)
    assert by_worker["web"].systemd == (
        ("NoNewPrivileges", True),
        ("PrivateTmp", True),
        ("ProtectSystem", "full"),
        ("ReadWritePaths", ("/srv/tmp", "-/var/x")),
    )
    assert by_worker["queue"].systemd == (("PrivateTmp", True), ("ProtectSystem", "strict"))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("ProtectSystem: true", ("ProtectSystem", "yes")),
        ("ProtectHome: read-only", ("ProtectHome", "read-only")),
        ("UMask: 0027", ("UMask", 0o027)),
        ("UMask: '0077'", ("UMask", 0o077)),
        ("Nice: -5", ("Nice", -5)),
        ("LimitNOFILE: infinity", ("LimitNOFILE", INFINITY)),
        ("LimitNOFILE: 4096", ("LimitNOFILE", 4096)),
        ("SystemCallArchitectures: native", ("SystemCallArchitectures", ("native",))),
        (
            "RestrictAddressFamilies: [AF_UNIX, AF_INET]",
            ("RestrictAddressFamilies", (True, ("AF_UNIX", "AF_INET"))),
        ),
        (
            "SystemCallFilter: '~@mount @swap'",
            ("SystemCallFilter", (False, ("@mount", "@swap"))),
        ),
    ],
)
def test_values_are_read_as_systemd_reads_them(
    tmp_path: Path, line: str, expected: tuple[str, object]
) -> None:
    """Booleans for yes/no choices, octal modes, `infinity`, words, allow- and deny-lists."""
    assert specs(write_config(tmp_path, web=line + "\n"))["web"].systemd == (expected,)


@pytest.mark.parametrize(
    ("line", "message", "hint"),
    [
        ("NoNewPrivilege: true", "unknown or unsupported", "did you mean 'NoNewPrivileges'?"),
        ("Frobnicate: 1", "unknown or unsupported", "pazuzu passes these: ExecPaths"),
        ("User: nobody", "unknown or unsupported", "pazuzu sets User itself; use user"),
        ("NoNewPrivileges: 1", "must be true or false", "true"),
        ("ProtectSystem: strct", "must be one of yes, no, full, strict", "strict"),
        ("ReadWritePaths: [tmp]", "'tmp' is not an absolute path", "/full/path"),
        ("ReadWritePaths: {a: b}", "must be a list of absolute paths", "/srv/app/tmp"),
        ("UMask: '0999'", "must be an octal file mode", "0027"),
        ("Nice: 30", "must be between -20 and 19", "0"),
        ("LimitNOFILE: lots", "must be an integer or infinity", "1024"),
    ],
)
def test_a_bad_property_is_an_error_with_file_line_key_and_hint(
    tmp_path: Path, line: str, message: str, hint: str
) -> None:
    """An unknown property, or a value of the wrong type, names where it is and what to do."""
    path = write_config(tmp_path, web=line + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    name = line.partition(":")[0]
    assert error.file == path
    assert error.line == 8
    assert error.key == f"applications.shop.workers.web.systemd.{name}"
    assert message in error.message
    assert error.hint is not None
    assert hint in error.hint


def test_properties_are_part_of_the_fingerprint_only_when_set(tmp_path: Path) -> None:
    """A change of properties restarts instances; without any, fingerprints stay as before."""
    plain = InstanceSpec(InstanceId("shop", "web", 1), "serve", Path("/srv"), ())
    sandboxed = dataclasses.replace(plain, systemd=(("PrivateTmp", True),))
    other = dataclasses.replace(plain, systemd=(("PrivateTmp", False),))
    assert len({plain.fingerprint, sandboxed.fingerprint, other.fingerprint}) == 3
    # The digest of a definition without properties, as pazuzu computed it before they existed.
    assert plain.fingerprint == "7fb4ca5f487b"


def test_signatures_agree_with_pystemds_table_where_it_has_the_property() -> None:
    """Our table says what pystemd's KNOWN_UNIT_SIGNATURES says, where that knows the name."""
    if importlib.util.find_spec("pystemd") is None:
        pytest.skip("pystemd is not installed")
    from pystemd.systemd1.unit_signatures import KNOWN_UNIT_SIGNATURES

    known = {name: KNOWN_UNIT_SIGNATURES.get(name.encode()) for name in PROPERTIES}
    differ = {
        name: (PROPERTIES[name].signature, theirs.decode())
        for name, theirs in known.items()
        if isinstance(theirs, bytes) and theirs.decode() != PROPERTIES[name].signature
    }
    assert differ == {}


def test_the_systemd_backend_encodes_properties_with_their_signatures() -> None:
    """Strings and lists become bytes; an allow-list is a (bas) structure."""
    if importlib.util.find_spec("pystemd") is None:
        pytest.skip("pystemd is not installed")
    from pazuzu.backends import systemd

    spec = InstanceSpec(
        InstanceId("shop", "web", 1),
        "serve",
        Path("/srv"),
        (),
        systemd=(
            ("NoNewPrivileges", True),
            ("ProtectSystem", "strict"),
            ("ReadWritePaths", ("/srv/tmp",)),
            ("RestrictAddressFamilies", (False, ("AF_PACKET",))),
            ("UMask", 0o027),
        ),
    )
    properties = systemd._unit_properties(spec, 0.0, "pazuzu-shop.slice")
    assert properties[-5:] == [
        (b"NoNewPrivileges", b"b", True),
        (b"ProtectSystem", b"s", b"strict"),
        (b"ReadWritePaths", b"as", [b"/srv/tmp"]),
        (b"RestrictAddressFamilies", b"(bas)", (False, [b"AF_PACKET"])),
        (b"UMask", b"u", 0o027),
    ]
    systemd._property_array(properties)  # pystemd's encoder takes every one of them
