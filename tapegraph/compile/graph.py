"""Expression DAGs: a deterministic order, sections, and networkx graphs.

Since equal subtrees are equal (hash, and the truth of ``==``), collecting
nodes in a set or a graph merges common subexpressions. The tables of the
lowering passes (sections here, slots, shapes and values in ``plan``,
``emit`` and ``lower``) are keyed by ``node.structure`` instead of the
node: the same merging, without ``==`` being called for every operand
that is an equal node built apart (a constant ``2.0`` that each VJP rule
makes afresh), which builds an ``equal`` node each time. The order is a design
decision: the depth-first post-order from the roots (taken in the order
given), so the same model always yields the same order, and the same tape,
byte for byte.

Every pass is one walk. The compile pipeline works on the post-order list
itself (``post_order``): building a networkx graph of it costs ten times
the walk or more (0.6 s against 0.05 to 0.16 s for a 100,000-node chain),
and a compile needs four walks, so the graph (``build_graph``) is made
only for those who want one: pictures, the command, tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import networkx as nx

from tapegraph.errors import GraphError
from tapegraph.expr import Leaf, Node, Structure


def post_order(roots: Iterable[Node]) -> list[Node]:
    """Every node ``roots`` depend on, once, each after its operands.

    Depth-first post-order from the roots in the order given, operands
    left to right; an explicit stack, since models can be far deeper than
    the recursion limit.
    """
    order: list[Node] = []
    # keyed by the structure token rather than the node: equal nodes share
    # it, and its hash is the built-in identity hash, four times faster
    # here than calling Node.__hash__
    done: set[Structure] = set()
    stack: list[tuple[Node, bool]] = [(root, False) for root in reversed(list(roots))]
    while stack:
        node, expanded = stack.pop()
        if node.structure in done:
            continue
        if expanded:
            done.add(node.structure)
            order.append(node)
            continue
        stack.append((node, True))
        for operand in reversed(node.inputs):
            if operand.structure not in done:
                stack.append((operand, False))
    return order


def build_graph(roots: Sequence[Node]) -> nx.DiGraph:
    """The DAG of everything ``roots`` depend on; edges run input -> user.

    Each graph node carries ``index``, its position in ``post_order(roots)``,
    used to break ties; nodes are inserted in that order.
    """
    order = post_order(roots)
    graph = nx.DiGraph()
    graph.add_nodes_from((node, {"index": index}) for index, node in enumerate(order))
    graph.add_edges_from((operand, node) for node in order for operand in node.inputs)
    return graph


def topological_order(graph: nx.DiGraph, section: dict[Structure, int] | None = None) -> list[Node]:
    """Every node after its inputs; ties broken by (section, post-order index).

    This is networkx's ``lexicographical_topological_sort`` with that key,
    computed as a plain sort: for a graph made by ``build_graph`` the key
    order is already topological (an operand's post-order index is below
    its user's, and its section is no later, see ``assign_sections``), and
    then the lexicographically smallest topological order is the sorted
    order itself.
    """
    index = nx.get_node_attributes(graph, "index")
    if section is None:
        return sorted(graph, key=index.__getitem__)
    return sorted(graph, key=lambda node: (section[node.structure], index[node]))


def order_by_section(order: Sequence[Node], section: dict[Structure, int]) -> list[Node]:
    """``order`` (a post-order) sorted by section, post-order within each.

    The same order as ``topological_order(graph, section)``; Python's sort
    is stable, so ties keep their post-order positions.
    """
    return sorted(order, key=lambda node: section[node.structure])


def _in_order(nodes: nx.DiGraph | Iterable[Node]) -> Iterable[Node]:
    # a graph is put in its topological order; a list is taken as given
    return topological_order(nodes) if isinstance(nodes, nx.DiGraph) else nodes


def ancestors_and_self(graph: nx.DiGraph, nodes: Iterable[Node]) -> set[Node]:
    """``nodes`` and everything they depend on, in one walk shared by all of them."""
    result: set[Node] = set()
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if node in result:
            continue
        result.add(node)
        stack.extend(operand for operand in graph.predecessors(node) if operand not in result)
    return result


def assign_sections(order: nx.DiGraph | Sequence[Node], roots: Sequence[tuple]) -> dict[Structure, int]:
    """Section index of each node, by its structure: the earliest section whose roots need it.

    ``order`` is ``post_order`` of the roots' nodes (or their graph);
    ``roots`` are ``(name, node, section)`` triples, sections named as in
    ``tapegraph.compile.tape.SECTIONS``. One sweep from users to operands
    (reverse post-order): a node's section is the earliest of its own as a
    root and those of its users, which are all final by the time it is
    reached.
    """
    from tapegraph.compile.tape import SECTIONS
    section_of: dict[Structure, int] = {}
    for _, node, section in roots:
        rank = SECTIONS.index(section)
        if rank < section_of.get(node.structure, len(SECTIONS)):
            section_of[node.structure] = rank
    for node in reversed(list(_in_order(order))):
        rank = section_of[node.structure]
        for operand in node.inputs:
            if rank < section_of.get(operand.structure, len(SECTIONS)):
                section_of[operand.structure] = rank
    return section_of


def check_names(nodes: nx.DiGraph | Iterable[Node]) -> dict[str, Node]:
    """Map each name to its node; two different nodes under one name is an error.

    ``nodes`` is a graph or a post-order list (``post_order``).
    """
    named: dict[str, Node] = {}
    for node in _in_order(nodes):
        if node.name is None:
            continue
        other = named.setdefault(node.name, node)
        if other.structure is not node.structure:
            if other.is_leaf and node.is_leaf and other.op is node.op and node.identity is not None:
                raise GraphError(_leaf_declared_twice(other, node))
            raise GraphError(
                f"two different nodes are named {node.name!r}: {other.op} {other.type_str} at {other.origin} "
                f"and {node.op} {node.type_str} at {node.origin}; give each its own name")
    return named


def _leaf_declared_twice(first: Node, second: Node) -> str:
    """The message for two ``tg.param`` (or ``tg.input``) calls under one name.

    Each call makes a leaf of its own, so this is two parameters, not one
    shared: the message names both lines and says how to share one.
    """
    noun = "parameter" if first.op.name == "param" else "input"
    if first.origin == second.origin:
        where = f"declared twice at {first.origin} (in a loop?)"
        rename = f"give each its own name (such as f\"{first.name}{{i}}\")"
    else:
        where = f"declared at {first.origin} and again at {second.origin}"
        rename = "give each its own name"
    types = first.type_str if first.type_str == second.type_str else f"{first.type_str} and {second.type_str}"
    return (f"{first.op} {first.name!r} ({types}) is {where}: each tg.{first.op} call makes a new {noun}, "
            f"so these are two {noun}s under one name; {rename}, or, to share one {noun}, "
            f"call tg.{first.op} once and reuse that node")


def leaves(nodes: nx.DiGraph | Iterable[Node], kind: Leaf) -> list[Node]:
    """The ``INPUT`` or ``PARAM`` leaves of a graph or post-order list, in that order."""
    return [node for node in _in_order(nodes) if node.op is kind]
