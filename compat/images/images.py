"""The Composer images the package is tested on: one `<image>.txt` and one `<image>/` lock each.

`<image>.txt` (pip constraints syntax) has two parts:
- the lines read from Google's "Preinstalled packages changelog" for that build (`+composer` stripped);
  `<image>/pyproject.toml` holds each of them as a `constraint-dependencies` entry;
- after the line `# resolved:`, the versions of the packages that matter to gce-vm-backup that were not
  read from the page, as `<image>/uv.lock` resolves them (`exclude-newer` = the newest date at which every
  line read from the page was still the newest release). This script writes that part from the lock.

    python compat/images/images.py render <image>   # rewrite the `# resolved:` part from <image>/uv.lock
    python compat/images/images.py check            # every image: pyproject, lock and file agree
    python compat/images/images.py list             # the images, oldest first
    python compat/images/images.py root             # the root pyproject's constraints := the newest image

Standard library only (it runs before any venv exists).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESOLVED_MARK = "# resolved:"

# What gce-vm-backup imports or runs on, directly or through Airflow: the packages whose versions the
# `# resolved:` part records when the page's lines did not give them.
KEY_PACKAGES = (
    "apache-airflow",
    "apache-airflow-core",
    "apache-airflow-task-sdk",
    "apache-airflow-providers-google",
    "apache-airflow-providers-standard",
    "apache-airflow-providers-common-compat",
    "apache-airflow-providers-common-io",
    "apache-airflow-providers-common-sql",
    "apache-airflow-providers-smtp",
    "apache-airflow-providers-slack",
    "apache-airflow-providers-celery",
    "apache-airflow-providers-openlineage",
    "google-cloud-compute",
    "google-cloud-storage",
    "google-cloud-orchestration-airflow",
    "google-api-core",
    "google-auth",
    "pydantic",
    "pydantic-core",
    "fastapi",
    "starlette",
    "structlog",
    "sqlalchemy",
    "tenacity",
    "rich",
    "pyyaml",
    "croniter",
    "pathspec",
    "requests",
    "celery",
    "protobuf",
    "grpcio",
)


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def images() -> list[str]:
    """Every image with a file here, oldest Airflow (then build) first."""

    def key(name: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", name))

    return sorted((p.stem for p in HERE.glob("composer-*.txt")), key=key)


def read_pins(image: str, *, page_only: bool = False) -> dict[str, str]:
    """`name -> version` from `<image>.txt` (normalized names); `page_only`: the page's lines alone."""
    pins: dict[str, str] = {}
    for raw in (HERE / f"{image}.txt").read_text().splitlines():
        line = raw.strip()
        if line.startswith(RESOLVED_MARK) and page_only:
            break
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        if not sep or not version or "+" in version:
            raise ValueError(f"{image}.txt: {line!r} is not `name==version` without a local tag")
        pins[normalize(name)] = version
    return pins


def lock_versions(lock_path: Path) -> dict[str, str]:
    lock = tomllib.loads(lock_path.read_text())
    return {normalize(p["name"]): p["version"] for p in lock["package"] if "version" in p}


def constraints(pyproject_path: Path) -> list[str]:
    data = tomllib.loads(pyproject_path.read_text())
    return list(data["tool"]["uv"].get("constraint-dependencies", []))


def render(image: str) -> None:
    """Rewrite the `# resolved:` part of `<image>.txt` from `<image>/uv.lock`."""
    path = HERE / f"{image}.txt"
    text = path.read_text()
    head = text.split(RESOLVED_MARK)[0].rstrip("\n") + "\n"
    page = read_pins(image, page_only=True)
    locked = lock_versions(HERE / image / "uv.lock")
    data = tomllib.loads((HERE / image / "pyproject.toml").read_text())
    date = data["tool"]["uv"]["exclude-newer"][:10]
    lines = [
        f"{RESOLVED_MARK} not read from the page; {image}/uv.lock resolves them as of {date}"
        " (exclude-newer).",
        *(f"{name}=={locked[name]}" for name in KEY_PACKAGES if name in locked and name not in page),
    ]
    path.write_text(head + "\n" + "\n".join(lines) + "\n")


def problems(image: str) -> list[str]:
    """How `<image>.txt`, `<image>/pyproject.toml` and `<image>/uv.lock` disagree (empty: they agree)."""
    found = []
    page = read_pins(image, page_only=True)
    pins = read_pins(image)
    cons = set()
    for constraint in constraints(HERE / image / "pyproject.toml"):
        name, rest = re.match(r"([A-Za-z0-9_.-]+)(.*)", constraint).groups()  # type: ignore[union-attr]
        cons.add(normalize(name) + rest.replace(" ", ""))
    for name, version in page.items():
        if f"{name}=={version}" not in cons:
            found.append(
                f"{image}: the page's {name}=={version} is not a constraint in {image}/pyproject.toml"
            )
    locked = lock_versions(HERE / image / "uv.lock")
    for name, version in pins.items():
        if name in locked and locked[name] != version:
            found.append(f"{image}: {name}=={version} in {image}.txt, {locked[name]} in {image}/uv.lock")
    for name in KEY_PACKAGES:
        if name in locked and name not in pins:
            found.append(f"{image}: {name} is in {image}/uv.lock but not in {image}.txt (run render)")
    return found


def root_constraints_block(image: str) -> str:
    pins = read_pins(image)
    lines = "".join(f'    "{name}=={version}",\n' for name, version in pins.items())
    return f"constraint-dependencies = [\n{lines}]"


def write_root() -> None:
    """The root pyproject's `[tool.uv] constraint-dependencies`: every version in the newest image's file."""
    path = HERE.parent.parent / "pyproject.toml"
    text = path.read_text()
    block = root_constraints_block(images()[-1])
    new, count = re.subn(r"^constraint-dependencies = \[\n.*?^\]", block, text, count=1, flags=re.M | re.S)
    if not count:
        raise SystemExit("pyproject.toml: no `constraint-dependencies = [` block under [tool.uv]")
    path.write_text(new)


def main(argv: list[str]) -> int:
    if argv[:1] == ["render"] and len(argv) == 2:
        render(argv[1])
        return 0
    if argv == ["check"]:
        found = [p for image in images() for p in problems(image)]
        print("\n".join(found) or f"{len(images())} images agree with their locks")
        return 1 if found else 0
    if argv == ["root"]:
        write_root()
        return 0
    if argv == ["list"]:
        print("\n".join(images()))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
