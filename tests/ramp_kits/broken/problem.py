"""A kit whose problem.py fails at import: everything is defined, then it raises."""

import os

import pandas as pd
import rampwf as rw
from sklearn.model_selection import StratifiedShuffleSplit

problem_title = "Broken kit (test kit)"
_target_column_name = "species"
_prediction_label_names = [0, 1, 2]

Predictions = rw.prediction_types.make_multiclass(label_names=_prediction_label_names)
workflow = rw.workflows.Classifier()
score_types = [rw.score_types.Accuracy(name="acc")]


def get_cv(X, y):
    cv = StratifiedShuffleSplit(n_splits=2, test_size=0.25, random_state=57)
    return cv.split(X, y)


def _read_data(path, f_name):
    data = pd.read_csv(os.path.join(path, "data", f_name))
    y_array = data[_target_column_name].to_numpy()
    X_array = data.drop(columns=[_target_column_name]).to_numpy()
    return X_array, y_array


def get_train_data(path="."):
    return _read_data(path, "train.csv")


def get_test_data(path="."):
    return _read_data(path, "test.csv")


raise ValueError("the organizer made a typo")
