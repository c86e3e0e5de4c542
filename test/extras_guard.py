"""Run a command as if only vilasr_ros's core and the given extras were installed.

``python extras_guard.py EXTRA[,EXTRA...] -m vilasr_ros.cli ARGS...`` computes the distributions the
core and those extras pull in (their ``Requires-Dist``, transitively), then blocks the import of any
top-level module that belongs only to other installed distributions — so a command that imports
something its extra does not declare fails here as it would on a user's machine with only that
extra installed, without installing anything (tests never download). ``core`` means no extra.
"""

from __future__ import annotations

import importlib.abc
import importlib.metadata as md
import re
import runpy
import sys



def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(dist: str, extras: set[str]) -> list[str]:
    """Names required by ``dist`` with ``extras``, markers evaluated for this interpreter."""
    from packaging.requirements import InvalidRequirement, Requirement

    out = []
    for text in md.requires(dist) or []:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
            continue
        out.append(req.name)
    return out


def allowed_distributions(extras: set[str]) -> set[str]:
    todo, seen = ["vilasr_ros"], set()
    first = True
    while todo:
        name = todo.pop()
        key = _norm(name)
        if key in seen:
            continue
        seen.add(key)
        try:
            todo += _requirements(name, extras if first else set())
        except md.PackageNotFoundError:
            pass
        first = False
    return seen


class Guard(importlib.abc.MetaPathFinder):
    def __init__(self, blocked: dict[str, str]):
        self.blocked = blocked

    def find_spec(self, fullname, path=None, target=None):
        top = fullname.partition(".")[0]
        if top in self.blocked:
            raise ModuleNotFoundError(f"No module named {top!r} (extras_guard: {self.blocked[top]} is not part of "
                                      f"the core or the extras under test)", name=top)
        return None


def install(extras: set[str]) -> None:
    """Make every module and distribution outside the allowed set look absent: imports fail,
    ``importlib.util.find_spec`` returns None and ``importlib.metadata`` says not found (libraries
    such as transformers probe for optional packages those ways)."""
    import importlib.util

    allowed = allowed_distributions(extras)
    blocked = {}
    blocked_dists = set()
    for module, dists in md.packages_distributions().items():
        if module in sys.stdlib_module_names or module in ("vilasr_ros", "vilasr_ros_sim", "vilasr_ros_training"):
            continue
        if not any(_norm(d) in allowed for d in dists):
            blocked[module] = dists[0]
            blocked_dists.update(_norm(d) for d in dists)
    sys.meta_path.insert(0, Guard(blocked))

    real_find_spec = importlib.util.find_spec

    def find_spec(name, package=None):
        if name.partition(".")[0] in blocked:
            return None
        return real_find_spec(name, package)

    importlib.util.find_spec = find_spec
    for fn in ("version", "distribution", "metadata", "requires", "files"):
        real = getattr(md, fn)

        def wrapped(name, _real=real):
            if _norm(name) in blocked_dists:
                raise md.PackageNotFoundError(name)
            return _real(name)

        setattr(md, fn, wrapped)


if __name__ == "__main__":
    extras = {e for e in sys.argv[1].split(",") if e and e != "core"}
    install(extras)
    if sys.argv[2] != "-m":
        raise SystemExit("usage: extras_guard.py EXTRAS -m MODULE ARGS...")
    module = sys.argv[3]
    sys.argv = [module] + sys.argv[4:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
