"""Diabetes: regression (scikit-learn's load_diabetes), Regressor workflow."""

import os

import pandas as pd
import rampwf as rw
from sklearn.model_selection import ShuffleSplit

problem_title = "Diabetes progression regression (test kit)"
_target_column_name = "progression"

Predictions = rw.prediction_types.make_regression()
workflow = rw.workflows.Regressor()
score_types = [
    rw.score_types.RMSE(name="rmse"),
    rw.score_types.RelativeRMSE(name="rel_rmse"),
    rw.score_types.NormalizedRMSE(name="norm_rmse"),
    rw.score_types.MARE(name="mare"),
]


def get_cv(X, y):
    cv = ShuffleSplit(n_splits=5, test_size=0.25, random_state=57)
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
