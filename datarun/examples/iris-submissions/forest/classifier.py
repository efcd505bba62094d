from sklearn.ensemble import RandomForestClassifier


class Classifier:
    def __init__(self):
        self.model = RandomForestClassifier(n_estimators=50, random_state=0)

    def fit(self, X, y):
        self.model.fit(X, y)
        return self

    def predict_proba(self, X):
        return self.model.predict_proba(X)
