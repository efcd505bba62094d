"""Join the serum measurements of external_data.csv (next to this file) on patient_id."""

import os

import pandas as pd
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

EXTERNAL_DATA = os.path.join(os.path.dirname(__file__), "external_data.csv")


def _merge_external_data(X):
    external = pd.read_csv(EXTERNAL_DATA)
    merged = X.merge(external, how="left", on="patient_id", validate="many_to_one")
    return merged.drop(columns=["patient_id"])


def get_estimator():
    return make_pipeline(
        FunctionTransformer(_merge_external_data), StandardScaler(), Ridge(alpha=1.0)
    )
