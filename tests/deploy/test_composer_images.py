"""The Composer images under compat/images: terraform deploys one of them, the root lock is the newest."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path
from types import ModuleType

import hcl2
import pytest
from hcl2 import SerializationOptions

ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = ROOT / "compat" / "images"


def _load_images() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compat_images", IMAGES_DIR / "images.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


images = _load_images()


def _terraform_default_image() -> str:
    options = SerializationOptions(strip_string_quotes=True, with_comments=False)
    with (ROOT / "terraform" / "variables.tf").open() as handle:
        parsed = hcl2.load(handle, serialization_options=options)
    for block in parsed["variable"]:
        if "image_version" in block:
            return block["image_version"]["default"]
    raise AssertionError("terraform/variables.tf has no image_version")


def _tfvars_example_image() -> str:
    text = (ROOT / "terraform" / "terraform.tfvars.example").read_text()
    match = re.search(r'^image_version\s*=\s*"([^"]+)"', text, flags=re.M)
    assert match, "terraform.tfvars.example names no image_version"
    return match.group(1)


def image_problems(image: str, known: list[str]) -> list[str]:
    """Why `image` is not a deployable default: it must have a package set under compat/images."""
    if image not in known:
        return [f"{image} has no compat/images/{image}.txt (the images: {', '.join(known)})"]
    return []


def root_lock_problems(pins: dict[str, str], locked: dict[str, str]) -> list[str]:
    """How the root lock differs from the newest image: every Airflow package, and every other pin it holds."""
    found = []
    for name, version in pins.items():
        if name not in locked:
            if name.startswith("apache-airflow"):
                found.append(f"{name}=={version} is in the newest image but not in uv.lock")
            continue
        if locked[name] != version:
            found.append(f"{name}: {version} in the newest image, {locked[name]} in uv.lock")
    return found


def test_there_is_an_oldest_and_a_newest_image_and_the_oldest_is_airflow_3_1_7():
    known = images.images()
    assert len(known) >= 2
    assert images.read_pins(known[0])["apache-airflow"] == "3.1.7"
    assert known[-1] == "composer-3-airflow-3.3.1-build.10"
    assert images.read_pins(known[-1])["apache-airflow"] == "3.3.1"


def test_terraform_default_and_example_name_an_image_with_a_package_set():
    known = images.images()
    assert image_problems(_terraform_default_image(), known) == []
    assert image_problems(_tfvars_example_image(), known) == []
    assert _terraform_default_image() == known[-1], "terraform's default is the newest tested image"


@pytest.mark.parametrize("planted", ["composer-3-airflow-3.3.2", "composer-3-airflow-3.3.1-build.9"])
def test_a_default_image_without_a_package_set_is_reported(planted):
    (problem,) = image_problems(planted, images.images())
    assert problem.startswith(f"{planted} has no compat/images/{planted}.txt")


def test_each_image_file_agrees_with_its_pyproject_and_lock():
    for image in images.images():
        assert images.problems(image) == [], image
        page = images.read_pins(image, page_only=True)
        assert page, f"{image}.txt has no line read from Google's page"
        assert "apache-airflow" in page
        assert "apache-airflow-core" in page


def test_the_root_lock_holds_the_newest_images_versions():
    newest = images.images()[-1]
    pins = images.read_pins(newest)
    locked = images.lock_versions(ROOT / "uv.lock")
    assert root_lock_problems(pins, locked) == []
    for name in ("apache-airflow", "apache-airflow-task-sdk", "apache-airflow-providers-google"):
        assert locked[name] == pins[name]


def test_the_root_constraints_are_the_newest_images_file():
    newest = images.images()[-1]
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["tool"]["uv"]["constraint-dependencies"] == [
        f"{name}=={version}" for name, version in images.read_pins(newest).items()
    ]


def test_a_root_lock_off_the_newest_image_is_reported():
    pins = {"apache-airflow": "3.3.1", "apache-airflow-providers-google": "22.8.0", "absl-py": "2.5.1"}
    locked = {"apache-airflow": "3.3.2", "apache-airflow-providers-google": "22.8.0"}
    assert root_lock_problems(pins, locked) == ["apache-airflow: 3.3.1 in the newest image, 3.3.2 in uv.lock"]
    assert root_lock_problems({"apache-airflow-providers-celery": "3.26.0"}, {}) == [
        "apache-airflow-providers-celery==3.26.0 is in the newest image but not in uv.lock"
    ]


def test_an_image_file_with_a_local_tag_or_a_range_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "HERE", tmp_path)
    (tmp_path / "composer-3-airflow-9.9.9-build.1.txt").write_text(
        "# header\napache-airflow==9.9.9+composer\n"
    )
    with pytest.raises(ValueError, match="without a local tag"):
        images.read_pins("composer-3-airflow-9.9.9-build.1")
    (tmp_path / "composer-3-airflow-9.9.9-build.1.txt").write_text("apache-airflow>=9\n")
    with pytest.raises(ValueError, match="not `name==version`"):
        images.read_pins("composer-3-airflow-9.9.9-build.1")


def test_a_lock_that_drifts_from_the_image_file_is_reported(tmp_path, monkeypatch):
    image = "composer-3-airflow-9.9.9-build.1"
    monkeypatch.setattr(images, "HERE", tmp_path)
    (tmp_path / f"{image}.txt").write_text(
        "apache-airflow==9.9.9\naiohttp==3.14.5\n\n# resolved: as of a date\napache-airflow-providers-google==30.0.0\n"
    )
    (tmp_path / image).mkdir()
    (tmp_path / image / "pyproject.toml").write_text(
        '[tool.uv]\nexclude-newer = "2030-01-01T00:00:00Z"\nconstraint-dependencies = ["apache-airflow==9.9.9"]\n'
    )
    (tmp_path / image / "uv.lock").write_text(
        "version = 1\n"
        '[[package]]\nname = "apache-airflow"\nversion = "9.9.9"\n'
        '[[package]]\nname = "apache-airflow-providers-google"\nversion = "30.0.1"\n'
        '[[package]]\nname = "pydantic"\nversion = "3.0.0"\n'
    )
    assert images.problems(image) == [
        f"{image}: the page's aiohttp==3.14.5 is not a constraint in {image}/pyproject.toml",
        f"{image}: apache-airflow-providers-google==30.0.0 in {image}.txt, 30.0.1 in {image}/uv.lock",
        f"{image}: pydantic is in {image}/uv.lock but not in {image}.txt (run render)",
    ]


def test_images_sort_oldest_airflow_first_then_build(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "HERE", tmp_path)
    for name in (
        "composer-3-airflow-3.3.1-build.10",
        "composer-3-airflow-3.3.1-build.9",
        "composer-3-airflow-3.1.7-build.0",
    ):
        (tmp_path / f"{name}.txt").write_text("")
    assert images.images() == [
        "composer-3-airflow-3.1.7-build.0",
        "composer-3-airflow-3.3.1-build.9",
        "composer-3-airflow-3.3.1-build.10",
    ]
