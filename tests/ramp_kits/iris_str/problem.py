"""Iris with the species by name: a string target, read with `.values` as RAMP kits
usually do (a pandas `str` array, not numpy's). Classifier workflow."""

import os

import pandas as pd
import rampwf as rw
from sklearn.model_selection import StratifiedShuffleSplit

problem_title = "Iris classification, species names (test kit)"
_target_column_name = "species"
_prediction_label_names = ["setosa", "versicolor", "virginica"]

Predictions = rw.prediction_types.make_multiclass(label_names=_prediction_label_names)
workflow = rw.workflows.Classifier()
score_types = [
    rw.score_types.Accuracy(name="acc"),
    rw.score_types.NegativeLogLikelihood(name="nll"),
    rw.score_types.F1Above(name="f1_70", threshold=0.7),
]


def get_cv(X, y):
    cv = StratifiedShuffleSplit(n_splits=3, test_size=0.25, random_state=57)
    return cv.split(X, y)


def _read_data(path, f_name):
    data = pd.read_csv(os.path.join(path, "data", f_name))
    y_array = data[_target_column_name].values
    X_array = data.drop(columns=[_target_column_name]).values
    return X_array, y_array


def get_train_data(path="."):
    return _read_data(path, "train.csv")


def get_test_data(path="."):
    return _read_data(path, "test.csv")
