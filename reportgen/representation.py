"""What changed inside the model: layers compared by linear CKA, channels matched by their responses,
Grad-CAM maps compared, from two fingerprints (fingerprint.Fingerprint) or two models' features.

Plain numbers in, plain data and sentences out: the changes page (two builds) and `reportgen compare`
(two models) both read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from reportgen.catalog import UNIT, by_key
from reportgen.cka import unbiased_hsic

UNCHANGED = 0.98  # CKA at or above which a layer is said to be unchanged
IDENTICAL = 1 - 1e-5  # CKA at or above which it is the same representation (float32 Gram matrices round near 1e-7):
# the layer and everything before it computed the same on the probe images
NO_COUNTERPART = 0.5  # a matched channel's response correlation under which it has no counterpart
MIN_IMAGES = 4  # the unbiased HSIC needs 4 images; fewer shared probe images: no comparison

UNBIASED, BIASED = "unbiased", "biased"


def estimator_for(images: int, features: int) -> str:
    """The unbiased HSIC where the images are few against the features (the plain estimator inflates
    CKA there: two unrelated layers of thousands of features over 64 images come out near 1); the plain
    one where there are more images than features."""
    return UNBIASED if images < features else BIASED


def _normalised(hsic: np.ndarray, rows: int) -> np.ndarray:
    """The cross block (rows x rest) of a joint HSIC matrix as CKA, clipped to [0, 1]; NaN where a
    layer is constant."""
    diagonal = np.diag(hsic)
    with np.errstate(invalid="ignore", divide="ignore"):
        norms = np.sqrt(np.where(diagonal > 1e-20, diagonal, np.nan))
        return np.clip(hsic[:rows, rows:] / np.outer(norms[:rows], norms[rows:]), *UNIT)


def cross_cka(grams_a: np.ndarray, grams_b: np.ndarray, estimator: str = UNBIASED) -> np.ndarray:
    """La x Lb linear CKA between every layer of A and every layer of B, from their n x n Gram matrices
    (centred or not: both estimators centre them; the unbiased HSIC of Song et al. 2012 is unchanged by
    centring)."""
    grams = np.concatenate([np.asarray(grams_a, np.float64), np.asarray(grams_b, np.float64)])
    if estimator == UNBIASED:
        hsic = unbiased_hsic(grams)
    else:
        n = grams.shape[1]
        centre = np.eye(n) - 1.0 / n
        flat = np.stack([centre @ g @ centre for g in grams]).reshape(len(grams), -1)
        hsic = flat @ flat.T
    return _normalised(hsic, len(grams_a))


def jackknife_cka(gram_a: np.ndarray, gram_b: np.ndarray, estimator: str) -> tuple[float, tuple[float, float]]:
    """One pair's CKA and its 90% delete-one-image jackknife interval (intervals.jackknife_interval,
    on the logit scale, inside [0, 1])."""
    from reportgen.intervals import jackknife_interval

    estimate = float(cross_cka(gram_a[None], gram_b[None], estimator)[0, 0])
    n = gram_a.shape[0]
    if n - 1 < MIN_IMAGES:
        return estimate, (float("nan"), float("nan"))
    replicates = []
    for left_out in range(n):
        kept = np.delete(np.arange(n), left_out)
        cut = np.ix_(kept, kept)
        replicates.append(float(cross_cka(gram_a[cut][None], gram_b[cut][None], estimator)[0, 0]))
    return estimate, jackknife_interval(estimate, replicates, bounds=by_key("cka_previous").bounds)


def response_correlations(profiles_a: np.ndarray, profiles_b: np.ndarray) -> np.ndarray:
    """Ca x Cb Pearson correlations of every channel of A with every channel of B over the same rows;
    0 where a channel is constant."""
    a = np.asarray(profiles_a, np.float64)
    b = np.asarray(profiles_b, np.float64)
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    norm_a, norm_b = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a.T @ b) / np.outer(norm_a, norm_b)
    return np.nan_to_num(np.clip(r, -1.0, 1.0), nan=0.0)


@dataclass(frozen=True)
class ChannelMatch:
    """The optimal one-to-one assignment of A's channels to B's, by response correlation."""

    pairs: tuple[tuple[int, int, float], ...]  # (channel of A, its channel in B, r), A's order
    width_a: int
    width_b: int
    constant: int = 0  # A's channels constant over the images (dead): no correlation, left out of `unmatched`

    @property
    def unmatched(self) -> int:
        """A's varying channels without a counterpart: unassigned (B is narrower) or r under NO_COUNTERPART."""
        return self.width_a - self.constant - sum(1 for _, _, r in self.pairs if r >= NO_COUNTERPART)

    @property
    def moved(self) -> list[tuple[int, int, float]]:
        """Matched channels (r at least NO_COUNTERPART) whose index changed, best matched first."""
        return sorted([p for p in self.pairs if p[0] != p[1] and p[2] >= NO_COUNTERPART], key=lambda p: -p[2])


def match_channels(profiles_a: np.ndarray, profiles_b: np.ndarray) -> ChannelMatch:
    """A's channels assigned to B's, each at most once, maximising the summed correlation
    (scipy.optimize.linear_sum_assignment)."""
    from scipy.optimize import linear_sum_assignment

    r = response_correlations(profiles_a, profiles_b)
    rows, cols = linear_sum_assignment(-r)
    pairs = tuple((int(a), int(b), float(r[a, b])) for a, b in zip(rows, cols))
    constant = int(np.sum(np.ptp(np.asarray(profiles_a, np.float64), axis=0) == 0))
    return ChannelMatch(pairs, r.shape[0], r.shape[1], constant)


def channels_sentence(match: ChannelMatch, name_a: str, name_b: str | None = None, verb: str = "is") -> str:
    """"3 of conv 49's channels changed index: channel 17 is now channel 3 (r = 0.91), ...; 5 of its 32
    channels have no counterpart (r < 0.5)": A's channels (`name_a`) as B's (`name_b`, or B is a later
    build of the same layer, `verb` "is now")."""
    said = []
    moved = match.moved
    other = f" of {name_b}" if name_b else ""
    if moved:
        shown = ", ".join(f"channel {a} {verb} channel {b}{other} (r = {r:.2f})" for a, b, r in moved[:3])
        said.append(f"{len(moved)} of {name_a}'s channels changed index: {shown}"
                    + (" and more" if len(moved) > 3 else ""))
    else:
        said.append(f"every matched channel of {name_a} kept its index")
    if match.unmatched:
        said.append(f"{match.unmatched} of its {match.width_a} channels have no counterpart (r < {NO_COUNTERPART})")
    if match.constant:
        said.append(f"{match.constant} of its channels are constant on the probe images")
    return "; ".join(said)


def cam_shift(cams_a: np.ndarray, cams_b: np.ndarray) -> tuple[float, float]:
    """How far Grad-CAM moved between two sets of maps of the same images (P x G x G): the mean shift of
    the maps' centre of mass in image widths, and the mean correlation of the maps. NaN where no
    image has positive evidence in both."""
    shifts, correlations = [], []
    grid = cams_a.shape[-1]
    centres = (np.arange(grid) + 0.5) / grid
    for a, b in zip(np.asarray(cams_a, np.float64), np.asarray(cams_b, np.float64)):
        a, b = np.maximum(a, 0.0), np.maximum(b, 0.0)
        if a.sum() <= 0 or b.sum() <= 0:
            continue
        centre_a = np.array([(a.sum(1) * centres).sum(), (a.sum(0) * centres).sum()]) / a.sum()
        centre_b = np.array([(b.sum(1) * centres).sum(), (b.sum(0) * centres).sum()]) / b.sum()
        shifts.append(float(np.linalg.norm(centre_a - centre_b)))
        if a.std() > 0 and b.std() > 0:
            correlations.append(float(np.corrcoef(a.ravel(), b.ravel())[0, 1]))
    return (float(np.mean(shifts)) if shifts else float("nan"),
            float(np.mean(correlations)) if correlations else float("nan"))


def runs(indices: list[int]) -> list[tuple[int, int]]:
    """Consecutive integers as (first, last) runs."""
    found: list[list[int]] = []
    for i in sorted(indices):
        if found and i == found[-1][1] + 1:
            found[-1][1] = i
        else:
            found.append([i, i])
    return [(a, b) for a, b in found]


def span(first: int, last: int) -> str:
    return f"conv {first}" if first == last else f"conv {first} to conv {last}"


def findings(rows: list[dict], what: str = "the previous build's") -> list[str]:
    """Sentences on which layers are identical (CKA 1), which changed little (CKA at least UNCHANGED),
    which moved (the interval below UNCHANGED), and which cannot be told apart; `rows` have index,
    cka, high and status (`status_of`)."""
    said = []
    status = {row["index"]: row for row in rows if row["cka"] is not None}

    def of(kind: str) -> list[int]:
        return [i for i, row in status.items() if row["status"] == kind]

    def amount(first: int, last: int) -> str:
        values = [status[i]["cka"] for i in range(first, last + 1)]
        return f"{min(values):.3f}" if first == last else f"{min(values):.3f} to {max(values):.3f}"

    identical = of("identical")
    if identical:
        verb = "is" if len(identical) == 1 else "are"
        said.append(f"{', '.join(span(*s) for s in runs(identical))} {verb} identical to {what} (CKA 1).")
    for first, last in runs(of("unchanged")):
        said.append(f"{span(first, last)} changed little (CKA {amount(first, last)}, {UNCHANGED} or above).")
    for first, last in runs(of("moved")):
        said.append(f"{span(first, last)} moved (CKA {amount(first, last)}).")
    unclear = of("cannot tell")
    if unclear:
        count = "1 layer" if len(unclear) == 1 else f"{len(unclear)} layers"
        said.append(f"Cannot tell whether {', '.join(span(*s) for s in runs(unclear))} moved: CKA under {UNCHANGED}, "
                    f"but the 90% interval reaches it ({count}).")
    return said


def status_of(cka: float, high: float) -> str:
    if not np.isfinite(cka):
        return "undefined"
    if cka >= IDENTICAL:
        return "identical"
    if cka >= UNCHANGED:
        return "unchanged"
    return "moved" if not np.isfinite(high) or high < UNCHANGED else "cannot tell"


@dataclass
class Inside:
    """Plain data for a page: two sets of layers compared."""

    compared: bool
    notes: list[str] = field(default_factory=list)  # what was compared, and what could not be
    findings: list[str] = field(default_factory=list)
    estimator: str = ""
    images: int = 0
    cka: np.ndarray | None = None  # La x Lb
    rows: list[dict] = field(default_factory=list)  # per layer of A present in B


def between_builds(current, previous, indices: list[int]) -> Inside:
    """This build's fingerprint against the previous build's (fingerprint.Fingerprint, or None where
    the previous build has none); `indices` are this build's conv numbers, in its layer order."""
    if current is None:
        return Inside(False, ["This build has no fingerprint: the layers were not compared inside."])
    if previous is None:
        return Inside(False, ["The previous build has no fingerprint (data/fingerprint.npz): the layers cannot "
                              "be compared inside the model until a build that has one."])
    notes = []
    shared = [i for i in current.ids if i in set(previous.ids)]
    if list(current.ids) != list(previous.ids):
        notes.append(f"The probe images differ: this build's {len(current.ids)}, the previous build's "
                     f"{len(previous.ids)}, {len(shared)} in both; the layers are compared on those {len(shared)}.")
        if len(shared) < MIN_IMAGES:
            return Inside(False, notes + [f"Fewer than {MIN_IMAGES} probe images in both: the layers cannot be "
                                          "compared inside the model."])
        current, previous = current.restricted(shared), previous.restricted(shared)
    n = len(shared)
    if n < MIN_IMAGES:
        return Inside(False, [f"Only {n} probe images: CKA needs at least {MIN_IMAGES}."])
    estimator = estimator_for(n, min(current.features + previous.features))
    matrix = cross_cka(current.grams, previous.grams, estimator)
    notes.append(f"Linear CKA over {n} probe images, each image's features on the common grid as one row, "
                 + ("with the unbiased HSIC estimator (Song et al. 2012), since the images are few against the "
                    f"features (at least {min(current.features + previous.features):,} per image)"
                    if estimator == UNBIASED else "with the plain estimator (more images than features)")
                 + "; the intervals are 90% delete-one-image jackknife intervals.")
    by_name = {name: k for k, name in enumerate(previous.layers)}
    rows = []
    cams_a, present_a = current.cams
    cams_b, present_b = previous.cams
    cam_pairs = [(current.cam_ids.index(i), previous.cam_ids.index(i)) for i in current.cam_ids
                 if i in set(previous.cam_ids)]
    for k, name in enumerate(current.layers):
        old = by_name.get(name)
        if old is None:
            continue
        estimate, (low, high) = jackknife_cka(current.grams[k].astype(np.float64),
                                              previous.grams[old].astype(np.float64), estimator)
        row = {"index": indices[k], "name": name, "cka": None if not np.isfinite(estimate) else estimate,
               "low": low, "high": high, "status": status_of(estimate, high), "channels": "", "cam": ""}
        if current.widths[k] == previous.widths[old]:
            row["channels"] = channels_sentence(match_channels(previous.profiles[old], current.profiles[k]),
                                                f"conv {indices[k]}", verb="is now")
        if cam_pairs and len(present_a) > k and present_a[k] and len(present_b) > old and present_b[old]:
            mine, theirs = zip(*cam_pairs)
            shift, r = cam_shift(cams_a[k][list(mine)], cams_b[old][list(theirs)])
            if np.isfinite(shift):
                row["cam"] = f"moved {shift * 100:.1f}% of the image (r = {r:.2f})"
        rows.append(row)
    if not cam_pairs:
        notes.append("Grad-CAM: the previous build stored no Grad-CAM maps of this build's pictured images, so how far "
                     "they moved is not said.")
    elif not any(row["cam"] for row in rows):
        notes.append("Grad-CAM: no layer has Grad-CAM maps with positive evidence in both builds on the pictured images "
                     "they share, so how far they moved is not said.")
    gone = len(set(previous.layers) - set(current.layers))
    if gone:
        notes.append(f"{gone} layers of the previous build are not in this one.")
    return Inside(True, notes, findings(rows), estimator, n, matrix, rows)
