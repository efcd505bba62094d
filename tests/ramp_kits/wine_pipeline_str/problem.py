"""Wine with the cultivar by name: a string target. SKLearnPipeline (pipeline.py)."""

import os

import pandas as pd
import rampwf as rw
from sklearn.model_selection import KFold

problem_title = "Wine classification, cultivar names (test kit)"
_target_column_name = "cultivar"
_prediction_label_names = ["barbera", "barolo", "grignolino"]

Predictions = rw.prediction_types.make_multiclass(label_names=_prediction_label_names)
workflow = rw.workflows.SKLearnPipeline(filename="pipeline.py")
score_types = [
    rw.score_types.Accuracy(name="acc"),
    rw.score_types.MacroAveragedRecall(name="recall"),
    rw.score_types.NegativeLogLikelihood(name="nll"),
]


def get_cv(X, y):
    cv = KFold(n_splits=3, shuffle=True, random_state=11)
    return cv.split(X, y)


def _read_data(path, f_name):
    data = pd.read_csv(os.path.join(path, "data", f_name))
    y_array = data[_target_column_name].values
    X_df = data.drop(columns=[_target_column_name])
    return X_df, y_array


def get_train_data(path="."):
    return _read_data(path, "train.csv")


def get_test_data(path="."):
    return _read_data(path, "test.csv")
