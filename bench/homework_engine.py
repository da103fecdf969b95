"""Baseline: the homework's computation-graph engine, reproduced minimally.

This is the design tapegraph grows from (DS-GA 1003 homework 7, see
/work/shared/seed/homework-computation-graphs.md), kept as it was so the
benchmark measures that design and not a tidied version of it:

- every node is an object with `forward()` / `backward()` and `out` / `d_out`;
- every `forward()` allocates a fresh `np.zeros` for `d_out`;
- values go in and gradients come out through dicts keyed by node name;
- `ComputationGraphFunction.get_gradients` runs a forward pass, then calls
  `backward()` on every node in reverse topological order.

Each `build_*` function returns a model whose `step(params, x, y, step_size)`
does one per-example SGD step the way the homework's `fit` loop does: get the
gradients, build a dict of steps `-step_size * grad`, increment the
parameters. Parameter arrays in `params` are updated in place.

Deliberate deviation: the homework's AffineNode used `np.ma.outer` (a masked
array outer product, an accident of the student solution); `np.outer` is used
here so the baseline is not slowed by masked-array machinery.
"""

import numpy as np


# ---------------------------------------------------------------- nodes


class ValueNode:
    """Node with no inputs holding a value (input, outcome or parameter)."""

    def __init__(self, node_name):
        self.node_name = node_name
        self.out = None
        self.d_out = None

    def forward(self):
        self.d_out = np.zeros(self.out.shape)
        return self.out

    def backward(self):
        pass

    def get_predecessors(self):
        return []


class VectorScalarAffineNode:
    """Node computing x . w + b for vectors x, w and a scalar b."""

    def __init__(self, x, w, b, node_name):
        self.node_name = node_name
        self.out = None
        self.d_out = None
        self.x = x
        self.w = w
        self.b = b

    def forward(self):
        self.out = np.dot(self.x.out, self.w.out) + self.b.out
        self.d_out = np.zeros(self.out.shape)
        return self.out

    def backward(self):
        d_x = self.d_out * self.w.out
        d_w = self.d_out * self.x.out
        d_b = self.d_out
        self.x.d_out += d_x
        self.w.d_out += d_w
        self.b.d_out += d_b
        return self.d_out

    def get_predecessors(self):
        return [self.x, self.w, self.b]


class SquaredL2DistanceNode:
    """Node computing sum((a - b)^2) for arrays a and b of one shape."""

    def __init__(self, a, b, node_name):
        self.node_name = node_name
        self.out = None
        self.d_out = None
        self.a = a
        self.b = b
        # Cached by forward() for backward().
        self.a_minus_b = None

    def forward(self):
        self.a_minus_b = self.a.out - self.b.out
        self.out = np.sum(self.a_minus_b ** 2)
        self.d_out = np.zeros(self.out.shape)
        return self.out

    def backward(self):
        d_a = self.d_out * 2 * self.a_minus_b
        d_b = -self.d_out * 2 * self.a_minus_b
        self.a.d_out += d_a
        self.b.d_out += d_b
        return self.d_out

    def get_predecessors(self):
        return [self.a, self.b]


class L2NormPenaltyNode:
    """Node computing l2_reg * ||w||^2 for a scalar l2_reg and a vector w."""

    def __init__(self, l2_reg, w, node_name):
        self.node_name = node_name
        self.out = None
        self.d_out = None
        self.l2_reg = np.array(l2_reg)
        self.w = w

    def forward(self):
        self.out = self.l2_reg * np.dot(self.w.out, self.w.out)
        self.d_out = np.zeros(self.out.shape)
        return self.out

    def backward(self):
        d_w = 2 * self.w.out * self.l2_reg * self.d_out
        self.w.d_out += d_w
        return self.d_out

    def get_predecessors(self):
        return [self.w]


class SumNode:
    """Node computing a + b for arrays a and b of one shape."""

    def __init__(self, a, b, node_name):
        self.node_name = node_name
        self.out = None
        self.d_out = None
        self.a = a
        self.b = b

    def forward(self):
        self.out = self.a.out + self.b.out
        self.d_out = np.zeros(self.out.shape)
        return self.out

    def backward(self):
        self.a.d_out += self.d_out
        self.b.d_out += self.d_out
        return self.d_out

    def get_predecessors(self):
        return [self.a, self.b]


class AffineNode:
    """Node computing W x + b for a matrix W (m, d), vectors x (d,), b (m,)."""

    def __init__(self, W, x, b, node_name):
        self.node_name = node_name
        self.out = None
        self.d_out = None
        self.W = W
        self.x = x
        self.b = b

    def forward(self):
        self.out = np.matmul(self.W.out, self.x.out) + self.b.out
        self.d_out = np.zeros(self.out.shape)
        return self.out

    def backward(self):
        # The homework assigns rather than adds: no node here has fan-out.
        self.W.d_out = np.outer(self.d_out, self.x.out)
        self.b.d_out = self.d_out
        self.x.d_out = np.matmul(self.W.out.T, self.d_out)
        return self.d_out

    def get_predecessors(self):
        return [self.W, self.b, self.x]


class TanhNode:
    """Node computing tanh(a) elementwise; d tanh(a) = 1 - tanh(a)^2."""

    def __init__(self, a, node_name):
        self.node_name = node_name
        self.out = None
        self.d_out = None
        self.a = a

    def forward(self):
        self.out = np.tanh(self.a.out)
        self.d_out = np.zeros(self.out.shape)
        return self.out

    def backward(self):
        self.a.d_out = self.d_out * (1 - self.out ** 2)
        return self.d_out

    def get_predecessors(self):
        return [self.a]


class SoftmaxNode:
    """Node computing exp(z) / sum(exp(z)); backward uses the full Jacobian."""

    def __init__(self, z, node_name):
        self.node_name = node_name
        self.out = None
        self.d_out = None
        self.z = z

    def forward(self):
        # Not shifted by max(z), as in the homework.
        self.out = np.exp(self.z.out) / np.sum(np.exp(self.z.out))
        self.d_out = np.zeros(self.out.shape)
        return self.out

    def backward(self):
        jacobian = -np.outer(self.out, self.out)
        np.fill_diagonal(jacobian, self.out * (1 - self.out))
        self.z.d_out = self.d_out @ jacobian
        return self.d_out

    def get_predecessors(self):
        return [self.z]


class NLLNode:
    """Node computing -log(y_hat[y_true]) for probabilities y_hat, label y_true."""

    def __init__(self, y_hat, y_true, node_name):
        self.node_name = node_name
        self.out = None
        self.d_out = None
        self.y_hat = y_hat
        self.y_true = y_true
        self.temp = None

    def forward(self):
        self.temp = self.y_hat.out[self.y_true.out]
        self.out = -np.log(self.temp)
        self.d_out = np.zeros(self.out.shape)
        return self.out

    def backward(self):
        temp2 = np.zeros(self.y_hat.out.shape)
        temp2[self.y_true.out] = -1 * (self.temp ** -1)
        self.y_hat.d_out = self.d_out * temp2
        return self.d_out

    def get_predecessors(self):
        return [self.y_hat, self.y_true]


# ---------------------------------------------------------------- graph


def sort_topologically(end_node):
    """Nodes reachable from end_node, each after all of its predecessors."""
    visited = set()
    sorted_nodes = []

    def visit(node):
        if node not in visited:
            visited.add(node)
            for predecessor in node.get_predecessors():
                visit(predecessor)
            sorted_nodes.append(node)

    visit(end_node)
    return sorted_nodes


class ComputationGraphFunction:
    """A graph packaged as a function of inputs, outcomes and parameters."""

    def __init__(self, inputs, outcomes, parameters, prediction, objective):
        self.inputs = inputs
        self.outcomes = outcomes
        self.parameters = parameters
        self.prediction = prediction
        self.objective = objective

        # Lets callers name nodes instead of holding them.
        self.name_to_node = {}
        self.name_to_node[prediction.node_name] = prediction
        self.name_to_node[objective.node_name] = objective
        for node in inputs + outcomes + parameters:
            self.name_to_node[node.node_name] = node

        # Sorted once here, not on every call.
        self.objective_node_list_forward = sort_topologically(objective)
        self.objective_node_list_backward = list(reversed(self.objective_node_list_forward))

    def _set_values(self, node_values):
        for node_name in node_values:
            self.name_to_node[node_name].out = node_values[node_name]

    def set_parameters(self, parameter_values):
        self._set_values(parameter_values)

    def increment_parameters(self, parameter_steps):
        for node_name in parameter_steps:
            self.name_to_node[node_name].out += parameter_steps[node_name]

    def get_objective(self, input_values, outcome_values):
        self._set_values(input_values)
        self._set_values(outcome_values)
        for node in self.objective_node_list_forward:
            obj = node.forward()
        return obj

    def get_gradients(self, input_values, outcome_values):
        """Forward, then backward in reverse topological order."""
        obj = self.get_objective(input_values, outcome_values)
        self.objective.d_out = np.array(1)
        for node in self.objective_node_list_backward:
            node.backward()
        parameter_gradients = {}
        for node in self.parameters:
            parameter_gradients[node.node_name] = node.d_out
        return obj, parameter_gradients


# ---------------------------------------------------------------- models


class SGDModel:
    """One graph plus the homework fit loop's per-example SGD step."""

    def __init__(self, graph):
        self.graph = graph

    def step(self, params, x, y, step_size):
        """One SGD step on (x, y); updates the arrays in `params` in place.

        x and y should be numpy values (rows of X and y, as in the homework's
        fit loop): ValueNode.forward reads `.shape` from them. Returns the
        objective before the step.
        """
        # Binds node.out to the caller's arrays; increment_parameters then
        # updates those same arrays in place.
        self.graph.set_parameters(params)
        obj, grads = self.graph.get_gradients(input_values={"x": x}, outcome_values={"y": y})
        steps = {}
        for param_name in grads:
            steps[param_name] = -step_size * grads[param_name]
        self.graph.increment_parameters(steps)
        return obj


def build_ridge(l2_reg=1.0):
    """Ridge regression: (x . w + b - y)^2 + l2_reg ||w||^2; params w, b."""
    x = ValueNode("x")
    y = ValueNode("y")
    w = ValueNode("w")
    b = ValueNode("b")
    prediction = VectorScalarAffineNode(x=x, w=w, b=b, node_name="prediction")
    square_loss = SquaredL2DistanceNode(a=prediction, b=y, node_name="square loss")
    reg_loss = L2NormPenaltyNode(l2_reg=l2_reg, w=w, node_name="reg_loss")
    loss = SumNode(a=square_loss, b=reg_loss, node_name="loss")
    graph = ComputationGraphFunction([x], [y], [w, b], prediction, loss)
    return SGDModel(graph)


def build_mlp_regression():
    """MLP regression: (w2 . tanh(W1 x + b1) + b2 - y)^2; params W1, b1, w2, b2.

    The same graph serves raw input (d = 1) and features (d = 400): shapes
    come from the parameter values.
    """
    x = ValueNode("x")
    y = ValueNode("y")
    W1 = ValueNode("W1")
    b1 = ValueNode("b1")
    w2 = ValueNode("w2")
    b2 = ValueNode("b2")
    hidden_affine = AffineNode(W=W1, x=x, b=b1, node_name="hidden affine")
    hidden = TanhNode(a=hidden_affine, node_name="tanh")
    prediction = VectorScalarAffineNode(x=hidden, w=w2, b=b2, node_name="prediction")
    objective = SquaredL2DistanceNode(a=prediction, b=y, node_name="square loss")
    graph = ComputationGraphFunction([x], [y], [W1, b1, w2, b2], prediction, objective)
    return SGDModel(graph)


def build_multiclass():
    """Multiclass MLP: -log softmax(W2 tanh(W1 x + b1) + b2)[y]; params W1, b1, W2, b2."""
    x = ValueNode("x")
    y = ValueNode("y")
    W1 = ValueNode("W1")
    b1 = ValueNode("b1")
    W2 = ValueNode("W2")
    b2 = ValueNode("b2")
    hidden_affine = AffineNode(W=W1, x=x, b=b1, node_name="hidden affine")
    hidden = TanhNode(a=hidden_affine, node_name="tanh")
    scores = AffineNode(W=W2, x=hidden, b=b2, node_name="scores")
    prediction = SoftmaxNode(z=scores, node_name="softmax")
    objective = NLLNode(y_hat=prediction, y_true=y, node_name="nll")
    graph = ComputationGraphFunction([x], [y], [W1, b1, W2, b2], prediction, objective)
    return SGDModel(graph)
