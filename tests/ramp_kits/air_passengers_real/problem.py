"""Air passengers: regression of log_PAX on real flight data (from
../shared/ramp-data/air_passengers at test time); submissions join their
external_data.csv (daily weather at the arrival airport). EstimatorExternalData."""

import os

import pandas as pd
import rampwf as rw
from sklearn.model_selection import ShuffleSplit

problem_title = "Number of air passengers prediction (test kit, real data)"
_target_column_name = "log_PAX"

Predictions = rw.prediction_types.make_regression()
workflow = rw.workflows.EstimatorExternalData()
score_types = [rw.score_types.RMSE(name="rmse", precision=3)]


def get_cv(X, y):
    cv = ShuffleSplit(n_splits=4, test_size=0.25, random_state=57)
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
