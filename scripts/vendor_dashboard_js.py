"""Vendor the dashboard's JavaScript libraries from the npm registry, pinned by checksum.

The dashboard's pages use uPlot (time-series charts) and dagre (the layout of the task graph).
Their minified builds and licenses are committed under
``src/ruv_swarm_persistence/dashboard/static/vendor/``, so the package works offline and a page
never fetches anything from elsewhere. This script is how they got there and how to check them:

    python scripts/vendor_dashboard_js.py          # download the pinned tarballs, write the files
    python scripts/vendor_dashboard_js.py --check  # exit 1 if a committed file differs

Each tarball is checked against the registry's ``dist.integrity`` (SHA-512) pinned below, and
each file written against its SHA-256; ``--check`` needs no network. To move to a new version,
change its version and integrity here (``npm view NAME@VERSION dist.integrity``), run the
script with ``--update``, and commit the result with the printed checksums.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "src" / "ruv_swarm_persistence" / "dashboard" / "static" / "vendor"
REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class Package:
    """One npm package: which files of its tarball are vendored, and their checksums."""

    name: str
    version: str
    integrity: str
    #: Path inside the tarball -> (name under vendor/, SHA-256 of the file).
    files: dict[str, tuple[str, str]]

    @property
    def url(self) -> str:
        base = self.name.rsplit("/", 1)[-1]
        return f"{REGISTRY}/{self.name}/-/{base}-{self.version}.tgz"


PACKAGES = (
    Package(
        "uplot",
        "1.6.32",
        "sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==",
        {
            "package/dist/uPlot.iife.min.js": (
                "uPlot.iife.min.js",
                "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
            ),
            "package/dist/uPlot.min.css": (
                "uPlot.min.css",
                "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
            ),
            "package/LICENSE": (
                "uPlot.LICENSE.txt",
                "8f989229699b4fe2f1a0432d0e9edc338a8a911e250e2d1b01ecd770a5f5b1bd",
            ),
        },
    ),
    Package(
        "@dagrejs/dagre",
        "3.1.3",
        "sha512-X4aUTwOReZvthaZWOVHqlJ52/ZdhZFEM4+Lh/uR4XooUSLE6p71bcy7MPGzYnNUcNh+nj+i/qJQpCMIdQnSmrg==",
        {
            "package/dist/dagre.min.js": (
                "dagre.min.js",
                "54a503e346f93ca0bb10abe7999587e037262935687aca45eb4e4b0f64bbb578",
            ),
            "package/LICENSE": (
                "dagre.LICENSE.txt",
                "6a349742a6cb219d5a2fc8d0844f6d89a6efc62e20c664450d884fc7ff2d6015",
            ),
        },
    ),
)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download(package: Package) -> bytes:
    with urllib.request.urlopen(package.url, timeout=120) as response:
        data: bytes = response.read()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != package.integrity:
        raise SystemExit(f"{package.url} does not match its pinned integrity (got {digest})")
    return data


def fetch(update: bool) -> int:
    """Download every package, check it, and write its files; 1 if a checksum differs."""
    VENDOR.mkdir(parents=True, exist_ok=True)
    status = 0
    for package in PACKAGES:
        with tarfile.open(fileobj=io.BytesIO(_download(package)), mode="r:gz") as tar:
            for member, (name, expected) in package.files.items():
                extracted = tar.extractfile(member)
                if extracted is None:
                    raise SystemExit(f"{package.url} has no file {member}")
                data = extracted.read()
                digest = _sha256(data)
                if digest != expected and not update:
                    print(f"{name}: sha256 {digest}, pinned {expected}", file=sys.stderr)
                    status = 1
                    continue
                (VENDOR / name).write_bytes(data)
                print(f"{name}  {package.name}@{package.version}  sha256 {digest}")
    return status


def check() -> int:
    """Compare the committed files with their pinned checksums; 1 if one differs."""
    status = 0
    for package in PACKAGES:
        for name, expected in package.files.values():
            path = VENDOR / name
            if not path.exists():
                print(f"{name}: missing (run scripts/vendor_dashboard_js.py)", file=sys.stderr)
                status = 1
            elif (digest := _sha256(path.read_bytes())) != expected:
                print(f"{name}: sha256 {digest}, pinned {expected}", file=sys.stderr)
                status = 1
    return status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="check the committed files only")
    parser.add_argument(
        "--update", action="store_true", help="write files whose checksum is not yet pinned"
    )
    args = parser.parse_args()
    raise SystemExit(check() if args.check else fetch(args.update))


if __name__ == "__main__":
    main()
