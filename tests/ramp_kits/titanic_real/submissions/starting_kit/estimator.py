"""Impute, one-hot encode the categories (with the cabin's deck) and fit a logistic
regression."""

from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

CATEGORICAL = ["Sex", "Pclass", "Embarked", "Deck"]
NUMERICAL = ["Age", "SibSp", "Parch", "Fare"]


def _add_deck(X):
    X = X.copy()
    X["Deck"] = X["Cabin"].str[0]
    X["Pclass"] = X["Pclass"].astype(str)
    return X


def get_estimator():
    categorical = make_pipeline(
        SimpleImputer(strategy="constant", fill_value="missing"),
        OneHotEncoder(handle_unknown="ignore"),
    )
    numerical = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    preprocessor = make_column_transformer(
        (categorical, CATEGORICAL), (numerical, NUMERICAL), remainder="drop"
    )
    return make_pipeline(
        FunctionTransformer(_add_deck), preprocessor, LogisticRegression(max_iter=1000)
    )
