"""No import circle anywhere in the tree, at module level: checked on the import graph of every
package of the project (grimp, the graph import-linter builds; imports inside functions and
under ``TYPE_CHECKING`` count too). ``lint-imports`` checks the same per package level
(contract "no import circles"); this also catches a module importing its own package's
``__init__`` while that ``__init__`` imports it."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest

grimp = pytest.importorskip("grimp")

PACKAGES = ("captum_camplus", "metrics", "camplus_app", "benchmarks")


def circles(modules: Iterable[str], imports: Callable[[str], Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing itself):
    each is one or more import circles. Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(imports(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(imports(child)))))
                elif child in on_stack:
                    low[module] = min(low[module], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[module])
            if low[module] == index[module]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == module:
                        break
                if len(component) > 1 or module in imports(module):
                    found.append(sorted(component))
    return found


def test_the_circle_finder_finds_circles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}, "f": set()}
    assert sorted(circles(graph, graph.__getitem__)) == [["a", "b", "c"], ["e"]]
    assert circles({"a": {"b"}, "b": set()}, {"a": {"b"}, "b": set()}.__getitem__) == []


def test_no_import_circle_in_the_tree() -> None:
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    ours = {m for m in graph.modules if m.partition(".")[0] in PACKAGES}

    def imports(module: str) -> set[str]:
        return set(graph.find_modules_directly_imported_by(module)) & ours

    assert circles(ours, imports) == []
