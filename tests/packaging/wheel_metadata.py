"""Check a built wheel's runtime dependencies fit a Composer image: `python wheel_metadata.py dist/*.whl`.

Composer installs PyPI packages on top of its own Airflow and providers, so the wheel must not pin them
(no ``==``/``===`` or upper bound below the next major on apache-airflow or a provider). Exit code 1 with one
line per problem; 0 and the list of requirements when the wheel fits.
"""

from __future__ import annotations

import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement


def runtime_requirements(wheel: Path) -> list[Requirement]:
    """The wheel's Requires-Dist without extras (what `pip install gce-vm-backup` pulls in)."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(name).decode())
    requirements = [Requirement(line) for line in metadata.get_all("Requires-Dist") or []]
    return [r for r in requirements if r.marker is None or "extra" not in str(r.marker)]


def problems(requirements: list[Requirement]) -> list[str]:
    found = []
    for requirement in requirements:
        if not requirement.name.startswith("apache-airflow"):
            continue
        for spec in requirement.specifier:
            if spec.operator in ("==", "===", "~="):
                found.append(f"{requirement}: pins {requirement.name}; Composer's image brings its own")
            elif (
                spec.operator in ("<", "<=") and requirement.name == "apache-airflow" and spec.version != "4"
            ):
                found.append(f"{requirement}: caps Airflow below 4")
        if requirement.name == "apache-airflow" and not any(
            s.operator == ">=" for s in requirement.specifier
        ):
            found.append(f"{requirement}: no floor for Airflow")
    return found


def main(argv: list[str]) -> int:
    exit_code = 0
    for wheel in map(Path, argv):
        requirements = runtime_requirements(wheel)
        for line in problems(requirements):
            print(f"{wheel.name}: {line}", file=sys.stderr)
            exit_code = 1
        if exit_code == 0:
            print(f"{wheel.name} fits a Composer image: " + ", ".join(map(str, requirements)))
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
