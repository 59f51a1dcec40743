#!/usr/bin/env python3
"""Import cycles between the files of each crate (issue: "no file cycle in any crate").

A file imports another when its code (comments and its `#[cfg(test)] mod tests` left
out; `*_tests.rs` files skipped) names `crate::<module>` of that file, `super::<name>`
where `<name>` is a sibling file, or `<child>::` of a module it declares. A parent's `pub use child::Item;` re-export is
its interface: the line itself does not count, but a file naming `parent::Item` (or
`crate::Item` for the crate root's re-exports) imports the child that defines it. The
strongly connected components of that graph with more than one file are the cycles. Prints each crate's cycles and exits 1 if there is
any.

Usage: scripts/file-cycles.py [CRATE_SRC_DIR ...]   (default: every crate of the workspace)
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CRATES = ["src"] + sorted(
    os.path.join("crates", c, "src") for c in os.listdir(os.path.join(ROOT, "crates"))
)
# A parent re-exporting its child's items (`pub use child::Item;`) is its interface, not a
# use of the child; such lines do not count as the parent importing the child.
REEXPORT_RE = re.compile(r"^\s*pub(\([a-z]+\))?\s+use\s")
# `pub use child::Item;`, `pub use self::child::{A, B};`, `pub use crate::a::b::Item;`
REEXPORT_ITEMS_RE = re.compile(
    r"^\s*pub(?:\([a-z]+\))?\s+use\s+((?:crate|self)::)?([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)::"
    r"(?:\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))",
    re.M,
)
PATH_RE = re.compile(r"\b(crate|super)::([A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*)")


def module_name(src_dir, path):
    parts = os.path.relpath(path, src_dir)[: -len(".rs")].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def code_of(path):
    text = open(path, encoding="utf-8").read()
    cut = text.find("#[cfg(test)]\nmod tests")
    if cut >= 0:
        text = text[:cut]
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def reexports(files):
    """(module, item) -> the module a `pub use` of that module takes the item from."""
    found = {}
    for module, path in files.items():
        parts = module.split("::") if module else []
        is_dir_module = os.path.basename(path) in ("mod.rs", "lib.rs", "main.rs")
        for root, source, group, single in REEXPORT_ITEMS_RE.findall(code_of(path)):
            base = [] if root == "crate::" else parts
            target = "::".join(base + source.split("::"))
            if target not in files:
                continue
            for item in (group.split(",") if group else [single]):
                name = item.strip().split(" as ")[-1].strip()
                if name and name != "self":
                    found[(module, name)] = target
    return found


def imports(src_dir):
    files = {}
    for directory, _, names in os.walk(src_dir):
        for name in names:
            if name.endswith(".rs") and not name.endswith("_tests.rs"):
                path = os.path.join(directory, name)
                if "bin" in os.path.relpath(path, src_dir).split(os.sep)[:-1]:
                    continue  # binaries are crates of their own
                files["::".join(module_name(src_dir, path))] = path
    edges = {m: set() for m in files}
    reexported = reexports(files)
    for module, path in files.items():
        parts = module.split("::") if module else []
        is_dir_module = os.path.basename(path) in ("mod.rs", "lib.rs", "main.rs")
        parent = parts if is_dir_module else parts[:-1]
        code = code_of(path)
        # A parent naming a child module declared here (`mod x;` ... `x::Item`).
        for child in re.findall(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", code, re.M):
            target = "::".join(parent + [child]) if is_dir_module else "::".join(parts + [child])
            used = "\n".join(l for l in code.splitlines() if not REEXPORT_RE.match(l))
            if target in files and re.search(r"(?<![A-Za-z0-9_:])" + child + r"::", used):
                edges[module].add(target)
        for root, rest in PATH_RE.findall(code):
            names = rest.split("::")
            base = [] if root == "crate" else parent[:-1] if is_dir_module else parent
            full = base + names
            for k in range(len(full), -1, -1):
                candidate = "::".join(full[:k])
                if candidate not in files:
                    continue
                if k < len(full):
                    # `parent::Item` where the parent re-exports a child's item.
                    candidate = reexported.get((candidate, full[k]), candidate)
                if candidate != module and (k > 0 or candidate != ""):
                    edges[module].add(candidate)
                break
    return edges


def cycles(edges):
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def main():
    crates = sys.argv[1:] or DEFAULT_CRATES
    total = 0
    for src_dir in crates:
        found = cycles(imports(os.path.join(ROOT, src_dir)))
        total += len(found)
        for component in found:
            print(f"{src_dir}: cycle between {', '.join(component)}")
    if total:
        print(f"{total} cycle(s)")
        return 1
    print("no import cycle between files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
