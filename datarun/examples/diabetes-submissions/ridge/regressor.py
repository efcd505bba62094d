from sklearn.linear_model import Ridge


class Regressor:
    def __init__(self):
        self.model = Ridge(alpha=0.1)

    def fit(self, X, y):
        self.model.fit(X, y)
        return self

    def predict(self, X):
        return self.model.predict(X)
