"""Each service's image (deploy/Dockerfile, ``--build-arg SERVICE=<name>``) has
a slim, non-root shape with its dependencies in a cached layer, and installs
exactly what the service imports: everything its modules load at import time
(followed through the shared library) is in the set ``uv sync --package``
installs from the lock, and no SDK of another service is. No Docker engine is
needed: the Dockerfile is parsed, the package set read from uv.lock."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import tomllib
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
SERVICES = sorted(p.parent.name for p in (ROOT / "services").glob("*/pyproject.toml"))
#: SDKs that only some services need: an image holding one it does not import is too big.
OPTIONAL_SDKS = {
    "gcloud-aio-storage",
    "asyncssh",
    "aioftp",
    "fastapi",
    "uvicorn",
    "jinja2",
    "aiosmtplib",
    "prometheus-client",
}
DEV_TOOLS = {"pytest", "moto", "ruff", "mypy", "cfn-lint", "pytest-xdist"}


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_is_slim_non_root_with_dependencies_cached_before_the_code() -> None:
    steps = _instructions()
    kinds = [kind for kind, _ in steps]
    [base] = [arg for kind, arg in steps if kind == "FROM"]
    assert base.endswith("-slim")
    users = [arg for kind, arg in steps if kind == "USER"]
    assert users
    assert users[-1] not in {"root", "0"}
    runs = [i for i, (kind, arg) in enumerate(steps) if kind == "RUN" and "uv sync" in arg]
    dependencies, project = runs[0], runs[-1]
    assert "--no-install-workspace" in steps[dependencies][1]
    assert "--mount=type=cache" in steps[dependencies][1]
    source_copies = [i for i, (kind, arg) in enumerate(steps) if kind == "COPY" and "/src" in arg]
    assert dependencies < min(source_copies) < project, "code copied after the dependency layer"
    for index in runs:
        assert '--package "conveyor-$SERVICE"' in steps[index][1]
        assert "--no-dev" in steps[index][1]
        assert "--frozen" in steps[index][1]
    assert kinds[-1] == "CMD"


@cache
def _image_packages(service: str) -> frozenset[str]:
    """What ``uv sync --frozen --no-dev --package conveyor-<service>`` installs."""
    out = subprocess.run(
        [
            "uv",
            "export",
            "--frozen",
            "--no-dev",
            "--no-hashes",
            "--no-header",
            "--no-emit-workspace",
            "--package",
            f"conveyor-{service}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = (re.split(r"[=<>;\s\[]", line, maxsplit=1)[0] for line in out.splitlines())
    return frozenset(_normal(n) for n in names if n and not n.startswith(("#", "-")))


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _module_file(module: str) -> Path | None:
    top, *rest = module.split(".")
    roots = {"conveyor_shared": ROOT / "shared" / "src"}
    roots.update(
        {f"conveyor_{s.replace('-', '_')}": ROOT / "services" / s / "src" for s in SERVICES}
    )
    if top not in roots:
        return None
    base = roots[top].joinpath(top, *rest)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _module_name(path: Path) -> str:
    parts = path.relative_to(path.parents[len(path.parts) - path.parts.index("src") - 2]).parts
    names = list(parts[:-1]) if parts[-1] == "__init__.py" else [*parts[:-1], path.stem]
    return ".".join(names)


def _absolute(path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def _import_time_imports(path: Path) -> set[str]:
    """Modules a file imports when it is imported (not inside functions or TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for child in ast.walk(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                module = _absolute(path, child)
                found.add(module)
                found.update(f"{module}.{alias.name}" for alias in child.names)
    return found


@cache
def _third_party_needed(service: str) -> frozenset[str]:
    """Distributions the service's modules need at import time, transitively."""
    package = f"conveyor_{service.replace('-', '_')}"
    pending = [p for p in (ROOT / "services" / service / "src" / package).rglob("*.py")]
    seen: set[Path] = set()
    modules: set[str] = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _import_time_imports(path):
            local = _module_file(module)
            if local is not None:
                pending.append(local)
            elif not module.startswith("conveyor_"):
                modules.add(module.split(".", 1)[0])
    distributions = importlib.metadata.packages_distributions()
    return frozenset(_normal(d) for m in modules for d in distributions.get(m, []))


@pytest.mark.parametrize("service", SERVICES)
def test_image_holds_every_package_the_service_imports(service: str) -> None:
    missing = _third_party_needed(service) - _image_packages(service)
    assert missing == set(), f"conveyor-{service}'s pyproject lacks {sorted(missing)}"


def _requirement_name(requirement: str) -> str:
    return _normal(re.split(r"[=<>\[;\s]", requirement, maxsplit=1)[0])


def _declared(service: str) -> set[str]:
    """The service's own direct dependencies and the SDKs of the shared library's
    extras it asks for (``conveyor-shared[gcs]``: loaded by the backend registry
    at run time, so no import names them)."""
    project = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())
    shared = tomllib.loads((ROOT / "shared" / "pyproject.toml").read_text())
    extras = shared["project"].get("optional-dependencies", {})
    declared = set()
    for requirement in project["project"]["dependencies"]:
        declared.add(_requirement_name(requirement))
        match = re.match(r"conveyor-shared\[([^\]]+)\]", requirement)
        for extra in match.group(1).split(",") if match else []:
            declared.update(_requirement_name(r) for r in extras.get(extra.strip(), []))
    return declared


@pytest.mark.parametrize("service", SERVICES)
def test_image_holds_no_other_services_sdk_nor_dev_tools(service: str) -> None:
    packages = _image_packages(service)
    extra = (packages & OPTIONAL_SDKS) - _third_party_needed(service) - _declared(service)
    assert extra == set(), f"conveyor-{service}'s image installs {sorted(extra)} it never imports"
    assert packages & DEV_TOOLS == set()
