"""
The shape of Comet's code, read from its source (issue 16).

Three rules hold for every production module (C{comet/**.py} and
C{twisted/plugins/*.py}); each is checked on the syntax tree, so comments and
docstrings never count:

 - B{size}: no module is longer than L{LIMIT} lines.  A longer one holds more
   than one idea; split it into modules named for what they hold.

 - B{private imports}: no module imports another package's underscore names.
   A name is private when one part of its dotted path starts with C{_} (and is
   not a C{__dunder__}): C{comet.store._db}, C{comet.store._db.migrate} and
   C{comet.store.vms._row} all are.  A private name belongs to the B{package}
   that holds it: the package of the private part's module, that is the
   directory (with an C{__init__.py}) the module lives in, or the package
   itself for a private name of a package's C{__init__}.  So
   C{comet.store._db._migrate} and C{comet.store.vms._row} belong to
   C{comet.store}, and C{comet.store._x} to C{comet.store} too.  A module may
   use the private names of its own package and of the packages around it
   (C{comet/store/sub/m.py} may import C{comet.store._db}); any other import
   is a back door.  Relative imports are resolved first.

 - B{private reaches}: no attribute access to another object's underscore
   names.  C{self._x} and C{cls._x} are an object's own; C{super()._x} is
   too.  C{self._other._x}, C{vm._x} and C{getattr(vm, "_x")} reach into
   another object.  An access through a name an import bound
   (C{_db._migrate} after C{from comet.store import _db}) is judged by the
   import rule on the whole dotted name, so a module may use a private name
   of a module in its own package that way.  Dunder names (C{x.__class__})
   are public.

Violations are reported as C{path:line: name}.  L{KNOWN} lists the ones that
existed when the rules came in, keyed by path and name (not line, so that
moving code does not disturb it), and only in the parts of the tree being
rewritten (L{REWRITTEN}) or in a module L{PENDING} names with its reason; a
listed violation that no longer occurs fails the test too, so the list only
shrinks: delete its entry when the code is fixed.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass

from twisted.trial.unittest import TestCase

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The longest a production module may be, in lines.
LIMIT = 500

#: Where production code lives, relative to the repository.
PRODUCTION = ("comet", os.path.join("twisted", "plugins"))

#: The only places where L{KNOWN} may list a violation: the parts being
#: redesigned under issue 16.  Everywhere else the rules hold outright.
REWRITTEN = ("comet/model/", "comet/web/")

#: Modules outside L{REWRITTEN} whose violations L{KNOWN} still lists, each
#: with why they are not fixed yet.  Only shrinks, like L{KNOWN}.
PENDING = {
    "comet/_exposure.py": (
        "_listen_address tokenises api.endpoint with Twisted's own private parser"
        " (endpoints._parse) and binds the arguments to its private parsers'"
        " signatures, so that the plain-HTTP check reads the string exactly as"
        " twistd will (a regular expression disagreed); Twisted has no public"
        " equivalent, and serverFromString reads ssl: key files"
    ),
}

#: Objects whose underscore attributes are an object's own.
OWN = frozenset({"self", "cls"})

#: Underscore names that their owner documents as public API, each with where.
DOCUMENTED = {
    "sys._current_frames": "https://docs.python.org/3/library/sys.html#sys._current_frames",
}


@dataclass(frozen=True)
class Violation:
    """One broken rule: where, which rule, and the offending name."""

    rule: str
    path: str
    line: int
    name: str

    def key(self) -> tuple[str, str, str]:
        """What L{KNOWN} lists for it: stable when lines move."""
        return (self.rule, self.path, self.name)

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.name}"


def is_private(part: str) -> bool:
    """Whether one part of a dotted name is an underscore name (not a dunder)."""
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def production_modules(root: str = REPO) -> list[str]:
    """Every production module, as a path relative to C{root} with C{/}."""
    found = []
    for top in PRODUCTION:
        for directory, dirs, files in os.walk(os.path.join(root, top)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.relpath(os.path.join(directory, name), root)
                    found.append(path.replace(os.sep, "/"))
    return found


def packages_of(root: str, paths: list[str]) -> frozenset[str]:
    """The dotted names of the packages (directories with an C{__init__.py}) among C{paths}."""
    return frozenset(
        path[: -len("/__init__.py")].replace("/", ".") for path in paths if path.endswith("/__init__.py")
    )


class Module:
    """
    One module's place in the tree: its dotted name and its package.

    @ivar packages: the dotted names of the repository's packages, to tell a
        package from a module or a class when finding whose a private name is.
    """

    def __init__(self, path: str, packages: frozenset[str]) -> None:
        self.path = path
        self.packages = packages
        dotted = path[: -len(".py")].replace("/", ".")
        self.is_package = dotted.endswith(".__init__")
        self.name = dotted[: -len(".__init__")] if self.is_package else dotted
        self.package = self.name if self.is_package else self.name.rpartition(".")[0]

    def resolve(self, level: int, module: str | None) -> str:
        """The absolute module of C{from <level dots><module> import ...}."""
        if level == 0:
            return module or ""
        base = self.package.split(".")
        base = base[: len(base) - (level - 1)]
        return ".".join(base + ([module] if module else []))

    def owner(self, dotted: str) -> str | None:
        """
        The package a dotted name's private part belongs to, or L{None} when
        no part of it is private.
        """
        parts = dotted.split(".")
        for i, part in enumerate(parts):
            if is_private(part):
                break
        else:
            return None
        prefix = parts[:i]
        # The prefix names a package, a module or something in a module: the
        # private name belongs to the innermost package around it.
        while prefix and ".".join(prefix) not in self.packages:
            if not ".".join(prefix).startswith("comet"):
                # Not ours: owned by where it is, which none of ours is in.
                return ".".join(parts[:i])
            prefix = prefix[:-1]
        return ".".join(prefix)

    def may_use(self, dotted: str) -> bool:
        """Whether this module may use C{dotted}: public, or private to a package around it."""
        if dotted in DOCUMENTED:
            return True
        owner = self.owner(dotted)
        return owner is None or self.package == owner or self.package.startswith(owner + ".")


def dotted_chain(node: ast.expr) -> list[str] | None:
    """C{a.b.c} as C{["a", "b", "c"]}; L{None} for anything but names and attributes."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def check_size(path: str, source: str) -> list[Violation]:
    """The size rule for one module."""
    lines = len(source.splitlines())
    if lines > LIMIT:
        return [Violation("size", path, lines, f"over {LIMIT} lines")]
    return []


def check_privates(module: Module, source: str) -> list[Violation]:
    """The private-import and private-reach rules for one module."""
    tree = ast.parse(source, module.path)
    found = []
    bound: dict[str, str] = {}  # name an import bound -> the dotted name it stands for

    def violation(rule: str, node: ast.AST, name: str) -> None:
        found.append(Violation(rule, module.path, node.lineno, name))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    top = alias.name.partition(".")[0]
                    bound[top] = top
                if not module.may_use(alias.name):
                    violation("import", node, alias.name)
        elif isinstance(node, ast.ImportFrom):
            source_module = module.resolve(node.level, node.module)
            for alias in node.names:
                dotted = source_module if alias.name == "*" else f"{source_module}.{alias.name}"
                if alias.name != "*":
                    bound[alias.asname or alias.name] = dotted
                if not module.may_use(dotted):
                    violation("import", node, dotted)

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            target = node.value
            if isinstance(target, ast.Name) and target.id in OWN:
                continue
            if (
                isinstance(target, ast.Call)
                and isinstance(target.func, ast.Name)
                and target.func.id == "super"
            ):
                continue
            chain = dotted_chain(node)
            if chain is not None and chain[0] in bound:
                if module.may_use(".".join([bound[chain[0]], *chain[1:]])):
                    continue
            violation("reach", node, ast.unparse(node))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and is_private(node.args[1].value)
            and not (isinstance(node.args[0], ast.Name) and node.args[0].id in OWN)
        ):
            violation("reach", node, ast.unparse(node))
    return found


def violations(root: str = REPO) -> list[Violation]:
    """Every violation of every rule in the production modules under C{root}."""
    paths = production_modules(root)
    packages = packages_of(root, paths)
    found = []
    for path in paths:
        with open(os.path.join(root, path), encoding="utf-8") as f:
            source = f.read()
        found.extend(check_size(path, source))
        found.extend(check_privates(Module(path, packages), source))
    return found


#: The violations that existed when these rules came in, all in the parts
#: being rewritten (L{REWRITTEN}).  Remove an entry when its code is fixed;
#: never add one.
KNOWN: frozenset[tuple[str, str, str]] = frozenset(
    {
        # Outside the rewritten parts: only what PENDING names, and why.
        ("reach", "comet/_exposure.py", "endpoints._TCP6ServerParser"),
        ("reach", "comet/_exposure.py", "endpoints._TCP6ServerParser._parseServer"),
        ("reach", "comet/_exposure.py", "endpoints._parse"),
        ("reach", "comet/_exposure.py", "endpoints._parseSSL"),
        ("reach", "comet/_exposure.py", "endpoints._parseTCP"),
    }
)


def compare(found: list[Violation], known: frozenset[tuple[str, str, str]], rule: str) -> str:
    """
    What is wrong with the violations of C{rule} found, given the C{known}
    ones: new violations, and known ones that no longer occur (fixed, so
    their entry must go).  Empty when nothing is.
    """
    found = [v for v in found if v.rule == rule]
    new = sorted((v for v in found if v.key() not in known), key=lambda v: (v.path, v.line))
    gone = sorted(k for k in known if k[0] == rule and k not in {v.key() for v in found})
    report = []
    if new:
        report.append(f"{rule} rule broken ({len(new)}):\n" + "\n".join(f"  {v}" for v in new))
    if gone:
        report.append(
            f"fixed, so delete from KNOWN in tests/test_layout.py ({len(gone)}):\n"
            + "\n".join(f"  {k!r}," for k in gone)
        )
    return "\n".join(report)


class LayoutTests(TestCase):
    """The production modules keep the rules, but for the L{KNOWN} violations."""

    def setUp(self) -> None:
        self.found = violations()

    def _check(self, rule: str) -> None:
        report = compare(self.found, KNOWN, rule)
        if report:
            self.fail(report)

    def test_size(self) -> None:
        """No production module is over L{LIMIT} lines."""
        self._check("size")

    def test_imports(self) -> None:
        """No production module imports another package's underscore names."""
        self._check("import")

    def test_reaches(self) -> None:
        """No production module reaches into another object's underscore names."""
        self._check("reach")

    def test_known_only_where_rewritten(self) -> None:
        """L{KNOWN} excuses nothing outside the parts being rewritten, but what L{PENDING} names."""
        outside = sorted(k for k in KNOWN if not k[1].startswith(REWRITTEN) and k[1] not in PENDING)
        self.assertEqual(outside, [])

    def test_pending_still_pending(self) -> None:
        """A module of L{PENDING} whose violations are all fixed leaves it."""
        self.assertEqual(sorted(p for p in PENDING if not any(k[1] == p for k in KNOWN)), [])

    def test_sees_the_tree(self) -> None:
        """The rules read the real modules (a walk that found none would pass anything)."""
        paths = production_modules()
        self.assertIn("comet/service.py", paths)
        self.assertIn("twisted/plugins/comet_plugin.py", paths)
        self.assertIn("comet/store/__init__.py", paths)


PACKAGES = frozenset({"comet", "comet.store", "comet.store.sub", "comet.model"})


def check(path: str, source: str) -> list[tuple[str, int, str]]:
    """The private rules on C{source} as if it were the module at C{path}."""
    return [(v.rule, v.line, v.name) for v in check_privates(Module(path, PACKAGES), source)]


class SizeRuleTests(TestCase):
    """The size rule catches a long module."""

    def test_over(self) -> None:
        source = "x = 1\n" * (LIMIT + 1)
        self.assertEqual(
            [str(v) for v in check_size("comet/long.py", source)],
            [f"comet/long.py:{LIMIT + 1}: size: over {LIMIT} lines"],
        )

    def test_at_limit(self) -> None:
        self.assertEqual(check_size("comet/long.py", "x = 1\n" * LIMIT), [])


class ImportRuleTests(TestCase):
    """The private-import rule catches back doors and lets a package use its own."""

    def test_other_package_private_name(self) -> None:
        """The back door issue 16 names: comet/admin.py importing from comet/store/_db.py."""
        self.assertEqual(
            check("comet/admin.py", "import os\nfrom comet.store._db import _migrate, open_db\n"),
            [
                ("import", 2, "comet.store._db._migrate"),
                ("import", 2, "comet.store._db.open_db"),
            ],
        )

    def test_other_package_private_module(self) -> None:
        self.assertEqual(
            check("comet/admin.py", "import comet.store._db as db\n"),
            [("import", 1, "comet.store._db")],
        )
        self.assertEqual(
            check("comet/admin.py", "from comet.store import _db\n"),
            [("import", 1, "comet.store._db")],
        )

    def test_private_name_of_public_module(self) -> None:
        self.assertEqual(
            check("comet/model/x.py", "from comet.store.vms import _row\n"),
            [("import", 1, "comet.store.vms._row")],
        )

    def test_third_party_private(self) -> None:
        self.assertEqual(
            check("comet/x.py", "from twisted.internet._sslverify import Opts\n"),
            [("import", 1, "twisted.internet._sslverify.Opts")],
        )

    def test_relative(self) -> None:
        """Relative imports are resolved before they are judged."""
        self.assertEqual(
            check("comet/model/x.py", "from ..store._db import open_db\nfrom ._y import z\n"),
            [("import", 1, "comet.store._db.open_db")],
        )

    def test_own_package(self) -> None:
        """A package's modules, its C{__init__} and packages inside it may use its private names."""
        source = "from comet.store._db import _migrate\nfrom comet.store.vms import _row\nimport comet.store._db\n"
        self.assertEqual(check("comet/store/vms.py", source), [])
        self.assertEqual(check("comet/store/__init__.py", source), [])
        self.assertEqual(check("comet/store/sub/m.py", source), [])

    def test_public(self) -> None:
        self.assertEqual(check("comet/admin.py", "from comet.store import open_db, __version__\nimport os.path\n"), [])

    def test_documented(self) -> None:
        """An underscore name its owner documents as public (L{DOCUMENTED}) is public."""
        self.assertEqual(check("comet/x.py", "import sys\nsys._current_frames()\nsys._other()\n"), [("reach", 3, "sys._other")])


class ReachRuleTests(TestCase):
    """The private-reach rule catches reaches into other objects."""

    def test_other_object(self) -> None:
        source = "def f(vm):\n    return vm._lock\n"
        self.assertEqual(check("comet/x.py", source), [("reach", 2, "vm._lock")])

    def test_through_own_attribute(self) -> None:
        """C{self._other._x} is another object's private name, reached through one's own."""
        source = "class A:\n    def f(self):\n        return self._vms._lock.acquire()\n"
        self.assertEqual(check("comet/x.py", source), [("reach", 3, "self._vms._lock")])

    def test_getattr(self) -> None:
        source = "getattr(vm, '_lock', None)\nsetattr(vm, '_x', 1)\ngetattr(self, '_mine', None)\n"
        self.assertEqual(
            check("comet/x.py", source),
            [("reach", 1, "getattr(vm, '_lock', None)"), ("reach", 2, "setattr(vm, '_x', 1)")],
        )

    def test_call_result(self) -> None:
        self.assertEqual(check("comet/x.py", "find(1)._state = 2\n"), [("reach", 1, "find(1)._state")])

    def test_own(self) -> None:
        """An object's own privates, its parent's, and dunder names are fine."""
        source = (
            "class A(B):\n"
            "    def f(self):\n"
            "        self._x = super()._y()\n"
            "        return other.__class__, self._x.public\n"
            "    @classmethod\n"
            "    def g(cls):\n"
            "        return cls._registry\n"
        )
        self.assertEqual(check("comet/x.py", source), [])

    def test_module_of_own_package(self) -> None:
        """A private name of a module in the same package, through the name an import bound."""
        source = "from comet.store import _db, vms\nimport comet.store._db\n_db._migrate(vms._row, comet.store._db._prepare)\n"
        self.assertEqual(check("comet/store/users.py", source), [])

    def test_module_of_other_package(self) -> None:
        """The same from another package is a reach."""
        source = "from comet.store import vms\nvms._row(1)\n"
        self.assertEqual(check("comet/admin.py", source), [("reach", 2, "vms._row")])


class CompareTests(TestCase):
    """The allow-list excuses what it lists, and only shrinks."""

    def test_new(self) -> None:
        found = [Violation("reach", "comet/x.py", 3, "vm._lock"), Violation("reach", "comet/y.py", 4, "a._b")]
        self.assertEqual(
            compare(found, frozenset({("reach", "comet/y.py", "a._b")}), "reach"),
            "reach rule broken (1):\n  comet/x.py:3: reach: vm._lock",
        )

    def test_known_moved(self) -> None:
        """A known violation on another line is still the known one."""
        found = [Violation("reach", "comet/y.py", 40, "a._b")]
        self.assertEqual(compare(found, frozenset({("reach", "comet/y.py", "a._b")}), "reach"), "")

    def test_gone(self) -> None:
        """A known violation that no longer occurs must leave the list."""
        self.assertEqual(
            compare([], frozenset({("reach", "comet/y.py", "a._b"), ("size", "comet/z.py", "x")}), "reach"),
            "fixed, so delete from KNOWN in tests/test_layout.py (1):\n  ('reach', 'comet/y.py', 'a._b'),",
        )
