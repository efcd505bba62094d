import numpy as np


class FeatureExtractor:
    def fit(self, X_df, y):
        return self

    def transform(self, X_df):
        X_df = X_df.copy()
        X_df["log_proline"] = np.log(X_df["proline"])
        X_df["dark"] = (X_df.pop("colour") == "dark").astype(float)
        return X_df.to_numpy()
