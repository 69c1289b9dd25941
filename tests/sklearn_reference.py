"""scikit-learn's ridge as the independent reference for the probes (a test-only dependency)."""

from sklearn.linear_model import Ridge
from sklearn.model_selection import PredefinedSplit, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from reportgen.catalog import PROBE_RIDGE


class PerRowRidge(Ridge):
    """The probe's ridge is per training row, (X'X/m + a I) w = X'y/m: scikit-learn's alpha = a m."""

    def fit(self, x, y, sample_weight=None):
        self.alpha = PROBE_RIDGE * len(x)
        return super().fit(x, y, sample_weight)


def held_out_predictions(features, targets_matrix, folds):
    """Each row predicted by standardised ridge fitted on the other folds' rows."""
    model = make_pipeline(StandardScaler(), PerRowRidge())
    return cross_val_predict(model, features, targets_matrix, cv=PredefinedSplit(folds))
