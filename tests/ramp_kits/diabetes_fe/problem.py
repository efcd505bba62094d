"""Diabetes: regression (scikit-learn's load_diabetes), FeatureExtractorRegressor."""

import os

import pandas as pd
import rampwf as rw
from sklearn.model_selection import KFold

problem_title = "Diabetes progression with a feature extractor (test kit)"
_target_column_name = "progression"

Predictions = rw.prediction_types.make_regression()
workflow = rw.workflows.FeatureExtractorRegressor()
score_types = [
    rw.score_types.RMSE(name="rmse"),
    rw.score_types.NormalizedRMSE(name="norm_rmse"),
]


def get_cv(X, y):
    cv = KFold(n_splits=4, shuffle=True, random_state=42)
    return cv.split(X, y)


def _read_data(path, f_name):
    data = pd.read_csv(os.path.join(path, "data", f_name))
    y_array = data[_target_column_name].to_numpy()
    X_df = data.drop(columns=[_target_column_name])
    return X_df, y_array


def get_train_data(path="."):
    return _read_data(path, "train.csv")


def get_test_data(path="."):
    return _read_data(path, "test.csv")
