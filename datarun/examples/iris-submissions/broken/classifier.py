from sklearn.linear_model import LogisticRegression


class Classifier:
    def __init__(self):
        self.model = LogisticRegression()

    def fit(self, X, y):
        # a typo that only shows when the code runs: the fold fails, with this traceback
        self.model.fitt(X, y)
        return self

    def predict_proba(self, X):
        return self.model.predict_proba(X)
