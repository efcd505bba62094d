"""Join the arrival airport's weather of external_data.csv (next to this file), encode
the date, one-hot encode the categories and fit a ridge regression."""

import os

import pandas as pd
from sklearn.compose import make_column_transformer
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

EXTERNAL_DATA = os.path.join(os.path.dirname(__file__), "external_data.csv")
CATEGORICAL = ["Departure", "Arrival", "year", "month", "week", "weekday"]
NUMERICAL = ["WeeksToDeparture", "std_wtd", "Max TemperatureC"]


def _merge_external_data(X):
    weather = pd.read_csv(EXTERNAL_DATA, parse_dates=["DateOfDeparture"])
    X = X.copy()
    X["DateOfDeparture"] = pd.to_datetime(X["DateOfDeparture"])
    return X.merge(weather, how="left", on=["DateOfDeparture", "Arrival"], validate="many_to_one")


def _encode_dates(X):
    X = X.copy()
    date = X.pop("DateOfDeparture")
    X["year"] = date.dt.year
    X["month"] = date.dt.month
    X["week"] = date.dt.isocalendar().week.astype(int)
    X["weekday"] = date.dt.day_of_week
    return X


def get_estimator():
    preprocessor = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
        (StandardScaler(), NUMERICAL),
        remainder="drop",
    )
    return make_pipeline(
        FunctionTransformer(_merge_external_data),
        FunctionTransformer(_encode_dates),
        preprocessor,
        Ridge(alpha=1.0),
    )
