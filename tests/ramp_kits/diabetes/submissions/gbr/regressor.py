from sklearn.base import BaseEstimator
from sklearn.ensemble import GradientBoostingRegressor


class Regressor(BaseEstimator):
    def __init__(self):
        self.reg = GradientBoostingRegressor(
            n_estimators=50, max_depth=2, learning_rate=0.1, random_state=61
        )

    def fit(self, X, y):
        self.reg.fit(X, y)
        return self

    def predict(self, X):
        return self.reg.predict(X)
