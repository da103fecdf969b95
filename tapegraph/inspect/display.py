"""Rich display in Jupyter: the dump of a program and a picture of its graph.

``Program._repr_html_`` / ``_repr_png_`` and ``Node._repr_html_`` delegate
here, importing this module only when a notebook asks, so ``import
tapegraph`` stays light. A repr must never raise (a notebook would show a
traceback instead of the object), so each function falls back to plain
text: a program with symbolic dimensions that has never been called has no
tape yet, and shows a note saying how to get one instead of its dump.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from typing import Any

from tapegraph.expr import Node
from tapegraph.inspect.dump import format_expression
from tapegraph.compile.graph import post_order

log = logging.getLogger("tapegraph")

#: Graphs with more nodes than this are not drawn inline: the picture would be too big to read in a cell.
MAX_PICTURE_NODES = 150
#: An expression's picture is shown up to this many nodes; larger ones are listed as text.
MAX_NODE_PICTURE_NODES = 40


def program_html(prog: Any) -> str:
    """HTML for a program in a notebook: its summary, its tape dump and a picture of its graph.

    The dump is escaped inside a ``<pre>``; the picture is a PNG embedded
    as base64 in an ``<img>``. A program whose tape needs sizes it has not
    seen yet gets a short note in place of the dump. Never raises.

    >>> import tapegraph as tg
    >>> w = tg.param("w", shape=(2,))
    >>> "<pre>" in program_html(tg.compile(tg.sum(tg.square(w)), wrt=[w]))
    True
    """
    try:
        parts = [f"<div class=\"tapegraph-program\"><p><code>{html.escape(repr(prog))}</code></p>",
                 _dump_html(prog)]
        picture = program_png(prog)
        if picture is not None:
            parts.append(_img(picture, "expression graph of the program"))
        parts.append("</div>")
        return "\n".join(parts)
    except Exception as error:  # a repr must not raise, whatever went wrong
        log.debug("tapegraph: program_html fell back to text", exc_info=True)
        return f"<pre>{html.escape(_safe_repr(prog))}</pre><p>(no rich display: {html.escape(str(error))})</p>"


def program_png(prog: Any) -> bytes | None:
    """The program's expression graph (with its gradients) as PNG bytes; None if it cannot be drawn.

    None for graphs of more than ``MAX_PICTURE_NODES`` nodes, or when
    drawing fails (matplotlib missing, say): a notebook then shows the
    text representation instead.
    """
    try:
        from tapegraph.inspect.draw import draw_graph

        objective = [] if prog.objective is None else [prog.objective]  # a predictor has none
        roots = [*objective, *prog.outputs.values(), *prog.gradients]
        if len(post_order(roots)) > MAX_PICTURE_NODES:
            return None
        return _png(draw_graph(prog))
    except Exception:  # display only: fall back to text rather than fail the cell
        log.debug("tapegraph: program_png could not draw the graph", exc_info=True)
        return None


def node_html(node: Node) -> str:
    """HTML for an expression node: its op, type, name and origin, then a picture or a listing.

    Expressions of up to ``MAX_NODE_PICTURE_NODES`` nodes are drawn (without
    gradients); every expression is also listed as text, one value a line,
    in a collapsible block. Never raises.

    >>> import tapegraph as tg
    >>> "f64[3]" in node_html(tg.input("x", shape=(3,)))
    True
    """
    try:
        name = f" <b>{html.escape(repr(node.name))}</b>" if node.name is not None else ""
        origin = f" at <code>{html.escape(node.origin)}</code>" if node.origin else ""
        parts = [f"<div class=\"tapegraph-node\"><p><code>{html.escape(node.op.name)} {html.escape(node.type_str)}</code>"
                 f"{name}{origin}</p>"]
        listing = format_expression(node)
        picture = _node_png(node, len(listing.splitlines()))
        if picture is not None:
            parts.append(_img(picture, f"expression graph of {node.label}"))
            parts.append(f"<details><summary>as text</summary><pre>{html.escape(listing)}</pre></details>")
        else:
            parts.append(f"<pre>{html.escape(listing)}</pre>")
        parts.append("</div>")
        return "\n".join(parts)
    except Exception as error:  # a repr must not raise, whatever went wrong
        log.debug("tapegraph: node_html fell back to text", exc_info=True)
        return f"<pre>{html.escape(_safe_repr(node))}</pre><p>(no rich display: {html.escape(str(error))})</p>"


def _dump_html(prog: Any) -> str:
    from tapegraph.errors import CallError

    try:
        return f"<pre>{html.escape(prog.dump())}</pre>"
    except CallError as error:
        # symbolic sizes that no call has bound yet: there is no tape to show
        return (f"<p><i>No tape yet: {html.escape(str(error))}. It is built for the sizes of the first call "
                f"(or see <code>prog.dump(sizes=...)</code>).</i></p>")


def _node_png(node: Node, count: int) -> bytes | None:
    if count > MAX_NODE_PICTURE_NODES:
        return None
    try:
        from tapegraph.inspect.draw import draw_graph

        return _png(draw_graph(node, gradients=False))
    except Exception:  # display only: the text listing is shown instead
        log.debug("tapegraph: node_html could not draw the graph", exc_info=True)
        return None


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _img(png: bytes, alt: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return f"<img src=\"data:image/png;base64,{encoded}\" alt=\"{html.escape(alt)}\">"


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # the last fallback must not raise either
        return f"<{type(value).__name__}>"
