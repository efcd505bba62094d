class FeatureExtractor:
    def fit(self, X_df, y):
        return self

    def transform(self, X_df):
        X_df = X_df.copy()
        X_df["bmi_x_bp"] = X_df["bmi"] * X_df["bp"]
        X_df["s5_squared"] = X_df["s5"] ** 2
        return X_df.to_numpy()
