"""Iris without test data: get_test_data returns (None, None), so ramp-test scores
the train and valid steps only (no test row, no bagged test score)."""

import os

import pandas as pd
import rampwf as rw
from sklearn.model_selection import StratifiedShuffleSplit

problem_title = "Iris classification without test data (test kit)"
_target_column_name = "species"
_prediction_label_names = [0, 1, 2]

Predictions = rw.prediction_types.make_multiclass(label_names=_prediction_label_names)
workflow = rw.workflows.Classifier()
score_types = [
    rw.score_types.Accuracy(name="acc"),
    rw.score_types.NegativeLogLikelihood(name="nll"),
]


def get_cv(X, y):
    cv = StratifiedShuffleSplit(n_splits=3, test_size=0.25, random_state=57)
    return cv.split(X, y)


def get_train_data(path="."):
    data = pd.read_csv(os.path.join(path, "data", "train.csv"))
    y_array = data[_target_column_name].to_numpy()
    X_array = data.drop(columns=[_target_column_name]).to_numpy()
    return X_array, y_array


def get_test_data(path="."):
    return None, None
