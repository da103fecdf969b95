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
from tapegraph.expr import Node


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
    """Every node after its inputs; ties broken by (section, post-order index).

    This is networkx's ``lexicographical_topological_sort`` with that key,
    computed as a plain sort: for a graph made by ``build_graph`` the key
    order is already topological (an operand's post-order index is below
    its user's, and its section is no later, see ``assign_sections``), and
    then the lexicographically smallest topological order is the sorted
    order itself. The sort runs in C; the heap of networkx's general
    algorithm cost a tenth of a large compile.
    """
    index = nx.get_node_attributes(graph, "index")
    if section is None:
        return sorted(graph, key=index.__getitem__)
    return sorted(graph, key=lambda node: (section[node], index[node]))


def ancestors_and_self(graph: nx.DiGraph, nodes: Iterable[Node]) -> set[Node]:
    """``nodes`` and everything they depend on, in one walk shared by all of them."""
    result: set[Node] = set()
    stack = [node for node in nodes]
    while stack:
        node = stack.pop()
        if node in result:
            continue
        result.add(node)
        stack.extend(operand for operand in graph.predecessors(node) if operand not in result)
    return result


def assign_sections(graph: nx.DiGraph, roots: Sequence[tuple]) -> dict[Node, int]:
    """Section index of each node: the earliest section whose roots need it.

    ``roots`` are ``(name, node, section)`` triples, sections named as in
    ``tapegraph.compile.tape.SECTIONS``. One sweep from users to operands
    (reverse post-order): a node's section is the earliest of its own as a
    root and those of its users, which are all final by the time it is
    reached.
    """
    from tapegraph.compile.tape import SECTIONS
    section_of: dict[Node, int] = {}
    for _, node, section in roots:
        rank = SECTIONS.index(section)
        if rank < section_of.get(node, len(SECTIONS)):
            section_of[node] = rank
    for node in reversed(topological_order(graph)):
        rank = section_of[node]
        for operand in node.inputs:
            if rank < section_of.get(operand, len(SECTIONS)):
                section_of[operand] = rank
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


def leaves(graph: nx.DiGraph, kind: str) -> list[Node]:
    """The ``input`` or ``param`` leaves of ``graph``, in deterministic order."""
    return [node for node in topological_order(graph) if node.op == kind]
