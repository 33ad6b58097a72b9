"""Fail on any use of Airflow's (or a provider's) private internals in the package, the CLI, the emulator,
the DAG files and the benchmarks.

Run by ``make lint``: ``python tests/lint/check_private_internals.py [paths...]`` (default: plugins/,
composer/, dags/, benchmarks/ of the repository). Prints one ``path:line: what`` per finding and exits 1
when there is any. Four kinds:

- **internal module**: an import of a module path with a component starting ``_internal``
  (``airflow.sdk.definitions._internal.mixins``), by ``import``/``from ... import``, or a string passed to
  ``importlib.import_module``/``__import__``; also a private name imported from an Airflow module
  (``from airflow.x import _helper``).
- **name-mangled**: an attribute, a name or a string constant of the form ``_SomeClass__name`` (how Python
  stores a class's ``__name`` attributes; ``getattr(op, "_BaseOperator__init_kwargs")`` included).
- **object.__setattr__**: ``object.__setattr__``/``object.__delattr__``, past a class's own attribute
  checks. Allowed only on ``self`` inside a class of the project outside Airflow's hierarchy (a frozen
  dataclass or pydantic model setting its own field); on anything else (``dag``, an operator, any other
  object) it is a finding, as telling an own object from Airflow's by its variable name is guesswork.
- **private attribute**: ``x._name``, or ``getattr``/``setattr``/``hasattr``/``delattr`` with ``"_name"``,
  where ``_name`` is a private (single underscore, not dunder) member of an Airflow or provider class the
  scanned code imports, or of one of their Airflow base classes: the names their class bodies define and
  the ``self._name`` attributes their methods set, found by reading Airflow's source (Airflow is not
  imported: the check takes about two seconds). A name the project defines itself in the body of a class
  of its own, or as an annotated ``self._name: T`` there, is the project's, and not a finding. That holds
  only for classes outside Airflow's hierarchy: in a class deriving from an Airflow class, or mixed into
  one (a base of such a class), defining one of Airflow's private names overrides Airflow's member, a
  finding too (``FastBuild._set_xcomargs_dependencies`` overriding BaseOperator's).

Airflow's source is read from the interpreter's ``sys.path`` (the project's venv under ``make lint``), so
the private names are those of the installed Airflow and providers.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("plugins", "composer", "dags", "benchmarks")
EXTERNAL_ROOTS = ("airflow",)  # Airflow core, the task SDK and every provider live under airflow.*
MANGLED = re.compile(r"_[A-Za-z][A-Za-z0-9_]*?[A-Za-z0-9]__[A-Za-z_][A-Za-z0-9_]*")
ATTRIBUTE_FUNCTIONS = frozenset({"getattr", "setattr", "hasattr", "delattr"})
IMPORT_FUNCTIONS = frozenset({"import_module", "__import__"})
OBJECT_BYPASS = frozenset({"__setattr__", "__delattr__"})
SKIPPED_DIRS = frozenset({".venv", "__pycache__", "node_modules", ".git"})


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def is_mangled(name: str) -> bool:
    return bool(MANGLED.fullmatch(name)) and not name.endswith("__")


def is_internal_module(path: str) -> bool:
    return any(part.startswith("_internal") for part in path.split("."))


def is_external(module: str) -> bool:
    return module.split(".", 1)[0] in EXTERNAL_ROOTS


# ---- Airflow's classes, read from source -----------------------------------------------------------
class SourceIndex:
    """Airflow's modules found on sys.path and parsed on demand (each file once)."""

    def __init__(self, search_path: Iterable[str]) -> None:
        self.search_path = [Path(p) for p in search_path if p and Path(p).is_dir()]
        self._trees: dict[str, ast.Module | None] = {}

    def tree(self, module: str) -> ast.Module | None:
        if module not in self._trees:
            self._trees[module] = None
            parts = module.split(".")
            for base in self.search_path:
                for candidate in (
                    base.joinpath(*parts, "__init__.py"),
                    base.joinpath(*parts).with_suffix(".py"),
                ):
                    if candidate.is_file():
                        self._trees[module] = ast.parse(candidate.read_bytes(), str(candidate))
                        break
                if self._trees[module] is not None:
                    break
        return self._trees[module]

    def is_package(self, module: str) -> bool:
        parts = module.split(".")
        return any(base.joinpath(*parts, "__init__.py").is_file() for base in self.search_path)


def absolute(module: str | None, level: int, current: str, *, package: bool) -> str:
    """The absolute module of ``from <level dots><module> import ...`` written in module ``current``."""
    if not level:
        return module or ""
    parts = current.split(".")
    base = parts if package else parts[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def top_level(tree: ast.Module) -> Iterator[ast.stmt]:
    """The module's statements, inside ``if``/``try``/``with`` blocks too, but not in functions or classes."""
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop(0)
        yield node
        if isinstance(node, ast.If | ast.Try | ast.With):
            for block in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, block, []) or []:
                    pending.extend(child.body if isinstance(child, ast.ExceptHandler) else [child])


@dataclass
class AirflowClass:
    module: str
    node: ast.ClassDef

    @property
    def name(self) -> str:
        return f"{self.module}.{self.node.name}"


@dataclass
class AirflowPrivates:
    """The private member names of the Airflow classes reached from the scanned code, and whose they are."""

    index: SourceIndex
    owner: dict[str, str] = field(default_factory=dict)  # private name -> the Airflow class defining it
    _seen: set[str] = field(default_factory=set)
    _resolving: set[tuple[str, str]] = field(default_factory=set)

    def resolve(self, module: str, name: str) -> AirflowClass | None:
        """The class ``name`` of Airflow module ``module`` follows to (re-exports and lazy imports too)."""
        if not is_external(module) or (module, name) in self._resolving:
            return None
        self._resolving.add((module, name))
        try:
            return self._resolve(module, name)
        finally:
            self._resolving.discard((module, name))

    def _resolve(self, module: str, name: str) -> AirflowClass | None:
        tree = self.index.tree(module)
        if tree is None:
            return None
        package = self.index.is_package(module)
        for node in top_level(tree):
            if isinstance(node, ast.ClassDef) and node.name == name:
                return AirflowClass(module, node)
        for node in top_level(tree):
            if isinstance(node, ast.ImportFrom):
                source = absolute(node.module, node.level, module, package=package)
                for alias in node.names:
                    if (alias.asname or alias.name) == name:
                        found = self.resolve(source, alias.name)
                        if found:
                            return found
        # lazy re-exports: {"Name": ".module"} or {"Name": ("airflow.sdk", "airflow.hooks.base")}
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == name:
                        targets = value.elts if isinstance(value, ast.Tuple | ast.List) else [value]
                        for target in targets:
                            if isinstance(target, ast.Constant) and isinstance(target.value, str):
                                path = target.value
                                dots = len(path) - len(path.lstrip("."))
                                source = absolute(path.lstrip(".") or None, dots, module, package=package)
                                found = self.resolve(source, name)
                                if found:
                                    return found
        return None

    def add(self, cls: AirflowClass) -> None:
        """Record the private names of ``cls`` and of its Airflow bases."""
        if cls.name in self._seen:
            return
        self._seen.add(cls.name)
        for name in class_members(cls.node, self_attributes=True):
            if name.startswith("__") and not name.endswith("__"):
                name = f"_{cls.node.name.lstrip('_')}{name}"  # stored name-mangled
            if is_private(name):
                self.owner.setdefault(name, cls.name)
        package = self.index.is_package(cls.module)
        tree = self.index.tree(cls.module)
        for base in cls.node.bases:
            found = None
            if isinstance(base, ast.Name):
                found = self.resolve(cls.module, base.id)
            elif isinstance(base, ast.Attribute) and tree is not None:
                found = self._resolve_attribute(base, cls.module, tree, package)
            if found:
                self.add(found)

    def _resolve_attribute(
        self, base: ast.Attribute, module: str, tree: ast.Module, package: bool
    ) -> AirflowClass | None:
        """``alias.Class`` where ``alias`` is a module imported by ``module``."""
        if not isinstance(base.value, ast.Name):
            return None
        for node in top_level(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname == base.value.id:
                        return self.resolve(alias.name, base.attr)
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if (alias.asname or alias.name) == base.value.id:
                        source = absolute(node.module, node.level, module, package=package)
                        return self.resolve(f"{source}.{alias.name}", base.attr)
        return None


def body_names(statement: ast.stmt) -> Iterator[str]:
    """The names one statement of a class body defines."""
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        yield statement.name
    elif isinstance(statement, ast.Assign):
        for target in statement.targets:
            yield from (t.id for t in ast.walk(target) if isinstance(t, ast.Name))
    elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
        yield statement.target.id


def class_members(node: ast.ClassDef, *, self_attributes: bool) -> Iterator[str]:
    """The names a class body defines, and (``self_attributes``) the ``self.<name>`` its methods set."""
    for statement in node.body:
        yield from body_names(statement)
    if self_attributes:
        for child in ast.walk(node):
            if (
                isinstance(child, ast.Attribute)
                and isinstance(child.ctx, ast.Store)
                and isinstance(child.value, ast.Name)
                and child.value.id == "self"
            ):
                yield child.attr


# ---- the scanned code -----------------------------------------------------------------------------
@dataclass
class Source:
    path: Path
    tree: ast.Module
    imported: dict[str, tuple[str, str]]  # local name -> (Airflow module, name) of ``from airflow.x import``
    nodes: list[ast.AST]  # every node, once (ast.walk order)
    classes: list[ast.ClassDef]


def read_sources(paths: Iterable[Path]) -> list[Source]:
    sources = []
    for path in paths:
        tree = ast.parse(path.read_bytes(), str(path))
        nodes = list(ast.walk(tree))
        imported = {}
        for node in nodes:
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and not node.level
                and is_external(node.module)
            ):
                for alias in node.names:
                    imported[alias.asname or alias.name] = (node.module, alias.name)
        classes = [node for node in nodes if isinstance(node, ast.ClassDef)]
        sources.append(Source(path, tree, imported, nodes, classes))
    return sources


def python_files(roots: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for root in roots:
        if root.is_file():
            found.append(root)
            continue
        for path in sorted(root.rglob("*.py")):
            if not SKIPPED_DIRS.intersection(path.relative_to(root).parts):
                found.append(path)
    return found


@dataclass
class Project:
    """The project's classes: which derive from an Airflow class, and which names the project defines."""

    sources: list[Source]
    airflow: AirflowPrivates
    classes: dict[str, list[tuple[Source, ast.ClassDef]]] = field(default_factory=dict)
    _derived: dict[int, str | None] = field(default_factory=dict)
    operator_classes: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        for source in self.sources:
            for node in source.classes:
                self.classes.setdefault(node.name, []).append((source, node))
        self.operator_classes = self.operator_side()

    def airflow_base(self, source: Source, node: ast.ClassDef) -> str | None:
        """The Airflow class ``node`` derives from (through the project's own classes too), or None."""
        key = id(node)
        if key in self._derived:
            return self._derived[key]
        self._derived[key] = None  # a cycle derives from nothing
        found: str | None = None
        for base in node.bases:
            name = base.id if isinstance(base, ast.Name) else None
            if name is None:
                continue
            if name in source.imported:
                resolved = self.airflow.resolve(*source.imported[name])
                found = resolved.name if resolved else f"{source.imported[name][0]}.{name}"
            else:
                for other_source, other in self.classes.get(name, []):
                    found = self.airflow_base(other_source, other)
                    if found:
                        break
            if found:
                break
        self._derived[key] = found
        return found

    def operator_side(self) -> set[int]:
        """The project's classes that derive from an Airflow class, and the project's classes mixed into
        those (their bases, transitively): in these, a name is Airflow's object's, not only the project's."""
        found: set[int] = set()
        pending = [
            (source, node)
            for named in self.classes.values()
            for source, node in named
            if self.airflow_base(source, node) is not None
        ]
        while pending:
            source, node = pending.pop()
            if id(node) in found:
                continue
            found.add(id(node))
            for base in node.bases:
                if isinstance(base, ast.Name) and base.id not in source.imported:
                    pending.extend(self.classes.get(base.id, []))
        return found

    def own_names(self) -> set[str]:
        names: set[str] = set()
        for source in self.sources:
            for node in source.classes:
                if id(node) not in self.operator_classes:
                    names.update(class_members(node, self_attributes=False))
                    names.update(
                        child.target.attr
                        for child in ast.walk(node)
                        if isinstance(child, ast.AnnAssign)
                        and isinstance(child.target, ast.Attribute)
                        and isinstance(child.target.value, ast.Name)
                        and child.target.value.id == "self"
                    )
        return names


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    message: str

    def render(self, root: Path) -> str:
        try:
            shown = self.path.resolve().relative_to(root)
        except ValueError:
            shown = self.path
        return f"{shown}:{self.line}: {self.message}"


def constant_str(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def call_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def enclosing_class(source: Source, node: ast.expr) -> ast.ClassDef | None:
    """The innermost class whose body (methods included) holds ``node``."""
    holding = [cls for cls in source.classes if cls.lineno < node.lineno <= (cls.end_lineno or cls.lineno)]
    return max(holding, key=lambda cls: cls.lineno, default=None)


def check_source(source: Source, project: Project, private: dict[str, str]) -> Iterator[Finding]:
    """Every finding in one file; ``private`` maps Airflow's private names (not the project's) to owners."""
    path = source.path
    for node in source.nodes:
        line = getattr(node, "lineno", 0)
        # internal modules, private names imported from Airflow
        if isinstance(node, ast.Import):
            for alias in node.names:
                if is_internal_module(alias.name):
                    yield Finding(path, line, f"import of internal module {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            for alias in node.names:
                if is_internal_module(f"{module}.{alias.name}"):
                    yield Finding(path, line, f"import from internal module {module}.{alias.name}")
                elif not node.level and is_external(module) and is_private(alias.name):
                    yield Finding(path, line, f"import of private name {alias.name} from {module}")
        elif isinstance(node, ast.Call):
            name = call_name(node)
            first = constant_str(node.args[0]) if node.args else None
            if name in IMPORT_FUNCTIONS and first and is_internal_module(first):
                yield Finding(path, line, f"import of internal module {first}")
            if name in ATTRIBUTE_FUNCTIONS and len(node.args) >= 2:
                attribute = constant_str(node.args[1])
                if attribute and attribute in private and not is_mangled(attribute):
                    yield Finding(
                        path, line, f'{name}(..., "{attribute}"): private attribute of {private[attribute]}'
                    )
            if (
                isinstance(node.func, ast.Attribute)
                and node.func.attr in OBJECT_BYPASS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "object"
            ):
                target = node.args[0] if node.args else None
                cls = enclosing_class(source, node)
                on_self = isinstance(target, ast.Name) and target.id == "self" and cls is not None
                operator_side = on_self and cls is not None and id(cls) in project.operator_classes
                if not on_self or operator_side:
                    what = ast.unparse(target) if target is not None else "?"
                    why = " (an Airflow class's object)" if operator_side else ""
                    yield Finding(
                        path,
                        line,
                        f"object.{node.func.attr}({what}, ...) bypasses the object's own attribute checks{why}",
                    )
        elif isinstance(node, ast.Attribute):
            if is_mangled(node.attr):
                yield Finding(path, line, f"name-mangled attribute {node.attr}")
            elif node.attr in private:
                yield Finding(path, line, f"private attribute {node.attr} of {private[node.attr]}")
        elif isinstance(node, ast.Name) and is_mangled(node.id):
            yield Finding(path, line, f"name-mangled name {node.id}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and is_mangled(node.value):
            yield Finding(path, line, f'name-mangled attribute in a string: "{node.value}"')
        elif isinstance(node, ast.ClassDef) and id(node) in project.operator_classes:
            for statement in node.body:
                for name in body_names(statement):
                    if name in project.airflow.owner:
                        yield Finding(
                            path,
                            statement.lineno,
                            f"{node.name}.{name} overrides a private member of {project.airflow.owner[name]}",
                        )


def check(paths: Iterable[Path], search_path: Iterable[str] | None = None) -> list[Finding]:
    sources = read_sources(python_files(paths))
    airflow = AirflowPrivates(SourceIndex(sys.path if search_path is None else search_path))
    for source in sources:
        for module, name in source.imported.values():
            found = airflow.resolve(module, name)
            if found:
                airflow.add(found)
    project = Project(sources, airflow)
    own = project.own_names()
    private = {name: owner for name, owner in airflow.owner.items() if name not in own}
    findings = [finding for source in sources for finding in check_source(source, project, private)]
    return sorted(set(findings), key=lambda f: (str(f.path), f.line, f.message))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    paths = [Path(arg) for arg in args] or [REPO / name for name in SCANNED]
    findings = check(paths)
    for finding in findings:
        print(finding.render(REPO))
    if findings:
        print(f"{len(findings)} use(s) of private Airflow internals", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
