"""Collection-level steps for person re-identification: PCA whitening fitted on the user's own
vectors, and k-reciprocal re-ranking at search time.

Both are unsupervised and need the whole collection, so they cannot live in a per-image embedder.
ImageNet features of people are dominated by a few directions shared by every picture (background,
camera, pose); whitening the collection's own principal components spreads the weight onto the
directions that tell people apart. On the shared re-ID sets it roughly doubles rank-1 of the `body`
model (benchmarks/bench_body.py).

Fitted state is plain arrays, saved as .npz with allow_pickle=False.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
import numpy as np

from .errors import InputError

__all__ = ["Whitening", "fit_whitening", "k_reciprocal_rerank", "WHITENING_DIM", "WHITENING_SHRINK"]

WHITENING_DIM = 256
WHITENING_SHRINK = 3.0
"""Defaults measured on the shared re-ID sets: keep 256 components, and add 3x the mean kept eigenvalue
to every eigenvalue before dividing (a partial whitening: weak components are not blown up to the
size of strong ones, which would amplify noise)."""


@dataclass(frozen=True)
class Whitening:
    """x -> l2_normalize((x - mean) @ P): a projection fitted by `fit_whitening`."""

    mean: np.ndarray
    """(d,) float32."""
    P: np.ndarray
    """(d, k) float32."""

    @property
    def dim(self) -> int:
        """Length of a whitened vector."""
        return int(self.P.shape[1])

    def apply(self, X: np.ndarray) -> np.ndarray:
        """(n, d) -> (n, k) float32, L2-normalised rows."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.mean.shape[0]:
            raise InputError(f"whitening was fitted on {self.mean.shape[0]}-d vectors, got shape {X.shape}")
        Y = (X - self.mean) @ self.P
        return _l2(Y)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write as .npz (no pickle)."""
        with open(path, "wb") as f:
            np.savez(f, mean=self.mean, P=self.P)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Whitening":
        """Read a file written by `save`; InputError when it is not one."""
        try:
            with np.load(path, allow_pickle=False) as z:
                mean, P = np.asarray(z["mean"], np.float32), np.asarray(z["P"], np.float32)
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"{os.fspath(path)} is not a whitening file: {e}") from e
        if mean.ndim != 1 or P.ndim != 2 or P.shape[0] != mean.shape[0]:
            raise InputError(f"{os.fspath(path)}: inconsistent shapes mean {mean.shape}, P {P.shape}")
        return cls(mean, P)


def fit_whitening(X: np.ndarray, dim: int = WHITENING_DIM, shrink: float = WHITENING_SHRINK) -> Whitening:
    """PCA whitening of the rows of X (the collection's own vectors, no labels).

    Keeps min(dim, rank) components; each is divided by sqrt(eigenvalue + shrink * mean kept
    eigenvalue). shrink=0 is full whitening. Needs at least 2 rows.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 2:
        raise InputError(f"fit_whitening needs an (n >= 2, d) array, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise InputError("fit_whitening: X holds NaN or infinite values")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise InputError(f"dim must be a positive integer, got {dim!r}")
    if not shrink >= 0:
        raise InputError(f"shrink must be >= 0, got {shrink!r}")
    n, d = X.shape
    mean = X.mean(axis=0)
    Xc = X - mean
    if d > n:  # eigenvectors of the n x n Gram matrix are cheaper and give the same components
        w, V = np.linalg.eigh(Xc @ Xc.T)
        order = np.argsort(w)[::-1]
        w, V = w[order], V[:, order]
        keep = w > max(w[0], 0.0) * 1e-9
        w, V = w[keep], V[:, keep]
        comps = (Xc.T @ V) / np.sqrt(w)
    else:
        w, comps = np.linalg.eigh(Xc.T @ Xc)
        order = np.argsort(w)[::-1]
        w, comps = w[order], comps[:, order]
        keep = w > max(w[0], 0.0) * 1e-9
        w, comps = w[keep], comps[:, keep]
    if w.size == 0:
        raise InputError("fit_whitening: all rows are identical; nothing to whiten")
    k = min(int(dim), w.size)
    lam = w[:k] / n
    P = comps[:, :k] / np.sqrt(lam + shrink * lam.mean())
    return Whitening(mean.astype(np.float32), np.ascontiguousarray(P, dtype=np.float32))


def k_reciprocal_rerank(q: np.ndarray, g: np.ndarray, k1: int = 20, k2: int = 6,
                        lambda_value: float = 0.3) -> np.ndarray:
    """Re-ranked (n_q, n_g) distances of L2-normalised queries q to gallery g (Zhong et al., CVPR 2017).

    Each vector is described by its k-reciprocal neighbours among all of q and g (expanded, weighted,
    smoothed over its k2 nearest); the final distance is (1 - lambda) * Jaccard distance of those
    descriptions + lambda * squared Euclidean distance / max. Cost is O((n_q + n_g)^2) memory.
    """
    q = np.asarray(q, dtype=np.float32)
    g = np.asarray(g, dtype=np.float32)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise InputError(f"q and g must be (n, d) arrays of the same d, got {q.shape} and {g.shape}")
    for name, v in (("k1", k1), ("k2", k2)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InputError(f"{name} must be a positive integer, got {v!r}")
    if not 0.0 <= lambda_value <= 1.0:
        raise InputError(f"lambda_value must be in [0, 1], got {lambda_value!r}")
    nq, ng = len(q), len(g)
    if nq == 0 or ng == 0:
        return np.zeros((nq, ng), dtype=np.float32)
    allf = np.concatenate([q, g])
    n = len(allf)
    dist = np.maximum(2.0 - 2.0 * (allf @ allf.T), 0.0).astype(np.float32)  # squared Euclidean
    dist /= np.maximum(dist.max(axis=0, keepdims=True), 1e-12)
    dist = np.ascontiguousarray(dist.T)
    k1 = min(int(k1), n - 1) if n > 1 else 1
    k2 = min(int(k2), n)
    rank = np.argsort(dist, axis=1, kind="stable")
    half = max(1, int(np.around(k1 / 2.0)))

    def reciprocal(i: int, k: int) -> np.ndarray:
        forward = rank[i, :k + 1]
        backward = rank[forward, :k + 1]
        return forward[(backward == i).any(axis=1)]

    V = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        rec = reciprocal(i, k1)
        expansion = [rec]
        for c in rec:
            crec = reciprocal(int(c), half)
            if len(np.intersect1d(crec, rec, assume_unique=True)) > 2.0 / 3.0 * len(crec):
                expansion.append(crec)
        idx = np.unique(np.concatenate(expansion))
        w = np.exp(-dist[i, idx])
        V[i, idx] = w / w.sum()
    if k2 > 1:
        V = np.stack([V[rank[i, :k2]].mean(axis=0) for i in range(n)])
    # Jaccard over the weighted neighbour sets: sum(min) / (2 - sum(min)), rows of V sum to 1.
    inverted = [np.flatnonzero(V[:, j]) for j in range(n)]
    jaccard = np.empty((nq, n), dtype=np.float32)
    for i in range(nq):
        overlap = np.zeros(n, dtype=np.float32)
        for j in np.flatnonzero(V[i]):
            rows = inverted[j]
            overlap[rows] += np.minimum(V[i, j], V[rows, j])
        jaccard[i] = 1.0 - overlap / (2.0 - overlap)
    final = (1.0 - lambda_value) * jaccard + lambda_value * dist[:nq]
    return np.ascontiguousarray(final[:, nq:], dtype=np.float32)


def _l2(X: np.ndarray) -> np.ndarray:
    X = np.ascontiguousarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return np.ascontiguousarray(X / norms, dtype=np.float32)

