"""The playground's browser files: exact npm releases, each checked against the sha512
`integrity` the registry publishes for its tarball, unpacked into `static/` when the package
is built or installed (setup.py). Standard library only: setup.py loads this file by path,
before any of the project's dependencies exist."""

import base64
import hashlib
import io
import os
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

STATIC = Path(__file__).with_name("static")
REGISTRY = "https://registry.npmjs.org"
# A folder holding the pinned tarballs (as named in their registry URL), for a build without
# the registry: they are checked against the same integrity hashes.
TARBALLS_ENV = "BANK_PLAYGROUND_TARBALLS"
_STAMP = "PINNED"


@dataclass(frozen=True)
class Pin:
    package: str
    version: str
    integrity: str
    # Member of the tarball -> the name it is served under (versioned: cached for good).
    files: dict[str, str]

    @property
    def tarball_url(self) -> str:
        basename = self.package.rsplit("/", 1)[-1]
        return f"{REGISTRY}/{self.package}/-/{basename}-{self.version}.tgz"

    @property
    def packed_name(self) -> str:
        """The tarball's name as `npm pack <package>@<version>` writes it."""
        return f"{self.package.lstrip('@').replace('/', '-')}-{self.version}.tgz"


# GraphiQL 3 is the last major with UMD builds (plain files a page loads with <script>);
# the explorer 3.2.5 is the one made for the @graphiql/react (0.28) that GraphiQL 3.8.3 bundles.
PINS = (
    Pin(
        "react",
        "18.3.1",
        "sha512-wS+hAgJShR0KhEvPJArfuPVN1+Hz1t0Y6n5jLrGQbkb4urgPE/0Rve+1kMB1v/oWgHgm4WIcV+i7F2pTVj+2iQ==",
        {
            "package/umd/react.production.min.js": "react-18.3.1.min.js",
            "package/LICENSE": "react-18.3.1.LICENSE.txt",
        },
    ),
    Pin(
        "react-dom",
        "18.3.1",
        "sha512-5m4nQKp+rZRb09LNH59GM4BxTh9251/ylbKIbpe7TpGxfJ+9kv6BLkLBXIjjspbgbnIBNqlI23tRnTWT0snUIw==",
        {
            "package/umd/react-dom.production.min.js": "react-dom-18.3.1.min.js",
            "package/LICENSE": "react-dom-18.3.1.LICENSE.txt",
        },
    ),
    Pin(
        "graphiql",
        "3.8.3",
        "sha512-cuPDYtXVKV86Pu5PHBX642Odi/uVEE2y1Jxq5rGO/Qy1G2lRp7ZZ7a/T30RzxhuLSWo9zUbzq0P3U49//H0Ugw==",
        {
            "package/graphiql.min.js": "graphiql-3.8.3.min.js",
            "package/graphiql.min.css": "graphiql-3.8.3.min.css",
            "package/LICENSE": "graphiql-3.8.3.LICENSE.txt",
        },
    ),
    Pin(
        "@graphiql/plugin-explorer",
        "3.2.5",
        "sha512-gM9UwD0PcOHe+XrRY2YMIV4pUrDIfV0YBQ5kQUZxk0BuVvZO9xk06XFv5plBKDAwtxbsuq+nET4i9FJCiYev2g==",
        {
            "package/dist/index.umd.js": "plugin-explorer-3.2.5.umd.js",
            "package/dist/style.css": "plugin-explorer-3.2.5.css",
        },
    ),
)
ASSETS = frozenset(name for pin in PINS for name in pin.files.values())


class PlaygroundFetchError(Exception):
    """A pinned tarball could not be had, or was not the one pinned."""


def missing(folder: Path = STATIC) -> list[str]:
    """The asset names absent from `folder`."""
    return sorted(name for name in ASSETS if not (folder / name).is_file())


def fetch_assets(folder: Path = STATIC) -> bool:
    """Put every pinned file into `folder`; False when they were all there already (from
    the same pins). Raises PlaygroundFetchError with the reason and the way out."""
    stamp = "".join(f"{p.package}@{p.version} {p.integrity}\n" for p in PINS)
    if not missing(folder) and _read(folder / _STAMP) == stamp:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():  # the folder is ours: files of earlier pins go
        old.unlink()
    for pin in PINS:
        _unpack(pin, _verified(pin, _tarball(pin)), folder)
    (folder / _STAMP).write_text(stamp, encoding="utf-8")
    return True


def _tarball(pin: Pin) -> bytes:
    local = os.environ.get(TARBALLS_ENV)
    if local:
        names = dict.fromkeys((pin.packed_name, pin.tarball_url.rsplit("/", 1)[-1]))
        for name in names:
            if (Path(local) / name).is_file():
                return (Path(local) / name).read_bytes()
        raise PlaygroundFetchError(f"{TARBALLS_ENV}: no {' or '.join(names)} in {local}")
    try:
        with urllib.request.urlopen(pin.tarball_url, timeout=60) as response:  # noqa: S310
            body: bytes = response.read()
            return body
    except OSError as exc:
        raise PlaygroundFetchError(
            f"cannot download {pin.tarball_url} ({exc}). The GraphiQL playground's files are "
            f"fetched from the npm registry when the package is built. Without access to it, "
            f"put the pinned tarballs ({', '.join(p.packed_name for p in PINS)}, as "
            f"`npm pack` names them) into a folder and set {TARBALLS_ENV} to it."
        ) from None


def _verified(pin: Pin, tarball: bytes) -> bytes:
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    if digest != pin.integrity:
        raise PlaygroundFetchError(
            f"{pin.package}@{pin.version}: the tarball's integrity is {digest}, "
            f"not the pinned {pin.integrity}"
        )
    return tarball


def _unpack(pin: Pin, tarball: bytes, folder: Path) -> None:
    # Only the named members, read as bytes and written under names of our own: nothing in
    # the archive chooses a path.
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for member, name in pin.files.items():
            try:
                extracted = archive.extractfile(member)
            except KeyError:
                extracted = None
            if extracted is None:
                raise PlaygroundFetchError(f"{pin.package}@{pin.version} has no file {member}")
            (folder / name).write_bytes(extracted.read())


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None
