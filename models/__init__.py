"""The homework's models on tapegraph, its data, and the main job (``python -m models``).

>>> from models import RidgeRegression, generate_problem
>>> problem = generate_problem(seed=0)
>>> X_train = problem.featurize(problem.x_train)
>>> ridge = RidgeRegression(l2_reg=1, step_size=5e-5, max_num_epochs=20, random_state=0).fit(X_train, problem.y_train)
>>> ridge.predict(X_train[:3]).shape
(3,)
"""

from .base import DataConversionWarning, DivergenceError, Estimator, NotFittedError
from .data import Problem, generate_problem, load_problem, make_blobs, save_problem
from .estimators import LinearRegression, MLPRegression, MulticlassClassifier, RidgeRegression
from .persist import load

__all__ = [
    "LinearRegression", "RidgeRegression", "MLPRegression", "MulticlassClassifier",
    "Estimator", "DivergenceError", "NotFittedError", "DataConversionWarning",
    "Problem", "generate_problem", "load_problem", "save_problem", "make_blobs", "load",
]
