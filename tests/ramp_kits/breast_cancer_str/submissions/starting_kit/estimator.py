from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def get_estimator():
    columns = make_column_transformer((OneHotEncoder(), ["size"]), remainder=StandardScaler())
    return make_pipeline(columns, LogisticRegression(C=0.5, max_iter=1000))
