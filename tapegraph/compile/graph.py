"""Expression DAGs as networkx graphs, with a deterministic order.

Nodes of the networkx graph are the expression nodes themselves; since
equal subtrees are equal (hash and ``==``), adding them merges common
subexpressions. The topological order is a design decision: ties are
broken by the depth-first post-order index from the roots, so the same
model always yields the same order, and the same tape, byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import networkx as nx

from tapegraph.errors import GraphError
from tapegraph.expr import Leaf, Node


def build_graph(roots: Sequence[Node]) -> nx.DiGraph:
    """The DAG of everything ``roots`` depend on; edges run input -> user.

    Each graph node carries ``index``, its depth-first post-order position
    from the roots (taken in the order given), used to break ties.
    """
    graph = nx.DiGraph()
    # iterative post-order: models can be deep enough to hit the recursion limit
    stack: list[tuple[Node, bool]] = [(root, False) for root in reversed(roots)]
    while stack:
        node, expanded = stack.pop()
        if node in graph:
            continue
        if expanded:
            graph.add_node(node, index=graph.number_of_nodes())
            for operand in node.inputs:
                graph.add_edge(operand, node)
            continue
        stack.append((node, True))
        for operand in reversed(node.inputs):
            if operand not in graph:
                stack.append((operand, False))
    return graph


def topological_order(graph: nx.DiGraph, section: dict[Node, int] | None = None) -> list[Node]:
    """Every node after its inputs; ties broken by (section, post-order index)."""
    index = nx.get_node_attributes(graph, "index")
    if section is None:
        return list(nx.lexicographical_topological_sort(graph, key=index.__getitem__))
    return list(nx.lexicographical_topological_sort(graph, key=lambda node: (section[node], index[node])))


def ancestors_and_self(graph: nx.DiGraph, nodes: Iterable[Node]) -> set[Node]:
    """``nodes`` and everything they depend on."""
    result: set[Node] = set()
    for node in nodes:
        if node not in result:
            result |= nx.ancestors(graph, node)
            result.add(node)
    return result


def assign_sections(graph: nx.DiGraph, roots: Sequence[tuple]) -> dict[Node, int]:
    """Section index of each node: the earliest section whose roots need it.

    ``roots`` are ``(name, node, section)`` triples, sections named as in
    ``tapegraph.compile.tape.SECTIONS``.
    """
    from tapegraph.compile.tape import SECTIONS
    section_of: dict[Node, int] = {}
    for index, section in enumerate(SECTIONS):
        section_roots = [node for _, node, root_section in roots if root_section == section]
        for node in ancestors_and_self(graph, section_roots):
            section_of.setdefault(node, index)
    return section_of


def check_names(graph: nx.DiGraph) -> dict[str, Node]:
    """Map each name to its node; two different nodes under one name is an error."""
    named: dict[str, Node] = {}
    for node in topological_order(graph):
        if node.name is None:
            continue
        other = named.setdefault(node.name, node)
        if other is not node and other != node:
            raise GraphError(
                f"two different nodes are named {node.name!r}: {other.op} {other.type_str} at {other.origin} "
                f"and {node.op} {node.type_str} at {node.origin}; give each its own name")
    return named


def leaves(graph: nx.DiGraph, kind: Leaf) -> list[Node]:
    """The ``INPUT`` or ``PARAM`` leaves of ``graph``, in deterministic order."""
    return [node for node in topological_order(graph) if node.op is kind]
