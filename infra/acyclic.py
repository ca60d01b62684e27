#!/usr/bin/env python3
"""Fails if a crate's modules import each other in a circle.

For each crate's `src/`, every `crate::a::b` and `super::x` path outside comments and
`#[cfg(test)]` modules is an edge to the module it names; a strongly connected component of
more than one module is a circle, printed with its edges. Crates cannot form circles: cargo
refuses them. Usage: infra/acyclic.py CRATE_DIR...
"""
import os, re, sys

def modules(src):
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith('.rs'):
                continue
            rel = os.path.relpath(os.path.join(root, f), src)[:-3].split(os.sep)
            if rel[-1] in ('mod', 'lib', 'main'):
                rel = rel[:-1]
            if rel and rel[0] == 'bin':
                continue
            mods['::'.join(rel)] = os.path.join(root, f)
    return mods

def code_of(path):
    text = open(path).read()
    cut = re.search(r'#\[cfg\(test\)\]\s*(pub(\(crate\))? )?mod tests', text)
    if cut:
        text = text[:cut.start()]
    return '\n'.join(l.split('//')[0] for l in text.split('\n'))

def resolve(path, mods):
    parts = path.split('::')
    for n in range(len(parts), 0, -1):
        name = '::'.join(parts[:n])
        if name in mods:
            return name
    return None

def edges(mods):
    graph = {m: set() for m in mods}
    for m, path in mods.items():
        code = code_of(path)
        me = m.split('::') if m else []
        refs = []
        # Paths inside use groups: `use crate::{a::X, b::{Y, Z}}` names a and b.
        for use in re.finditer(r'\buse\s+((?:crate|super|self)(?:::super)*)::([^;]*);', code, re.S):
            base, rest = use.group(1), use.group(2)
            heads = re.findall(r'(?:^|[{,]\s*)([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)', rest)
            refs += [(base, h) for h in heads]
        refs += re.findall(r'\b((?:crate|super)(?:::super)*)::([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)', code)
        for base, rest in refs:
            if base.startswith('crate'):
                start = []
            else:
                ups = base.count('super')
                # `super` from a file module is its parent; from mod.rs the same rule holds.
                start = me[:len(me) - ups] if base.startswith('super') else me
            target = resolve('::'.join(start + rest.split('::')), mods)
            if target is not None and target != m:
                graph[m].add(target)
    return graph

def cycles(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = counter[0]; counter[0] += 1
        stack.append(v); on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out

failed = False
def source_root(crate):
    # `src/`, or the folder of the library a manifest names (`[lib] path = "support/lib.rs"`).
    manifest = os.path.join(crate, 'Cargo.toml')
    if os.path.exists(manifest):
        lib = re.search(r'\[lib\][^\[]*?path\s*=\s*"([^"]+)"', open(manifest).read(), re.S)
        if lib:
            return os.path.dirname(os.path.join(crate, lib.group(1)))
    return os.path.join(crate, 'src')

for crate in sys.argv[1:]:
    mods = modules(source_root(crate))
    graph = edges(mods)
    circles = cycles(graph)
    failed = failed or bool(circles)
    for comp in circles:
        print(f'{crate}: circle between {", ".join(comp)}')
        for m in comp:
            print(f'  {m} -> {", ".join(sorted(t for t in graph[m] if t in comp))}')
    if not circles:
        print(f'{crate}: {len(mods)} modules, no circle')
sys.exit(1 if failed else 0)
