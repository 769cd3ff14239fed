"""Plain-NumPy references for the hidden layer, the fused step and training.

Never shipped.  Everything here is written as directly as possible from the
formulas (and, for training, from Raschka's ``NeuralNetMLP``), so that the
tests compare fastbp against code whose correctness is evident on reading.
"""

import numpy as np


def unit_roundoff(dtype):
    """u = 2^-53 (float64) or 2^-24 (float32)."""
    return float(np.finfo(dtype).eps) / 2


def gamma(k, dtype):
    """γ_k = k u / (1 − k u): bound on the relative error of a k-term sum."""
    u = unit_roundoff(dtype)
    return k * u / (1 - k * u)


# --------------------------------------------------------------------------
# Hidden layer, unfused
# --------------------------------------------------------------------------


def delta_h_reference(delta_out, W_out, A_h):
    """(δ_out W_outᵀ) ⊙ A_h ⊙ (1 − A_h), by NumPy."""
    return (delta_out @ W_out.T) * A_h * (1 - A_h)


def grad_W_h_reference(X, delta_h):
    """Xᵀ δ_h in float64 (float32 inputs) or long double (float64 inputs)."""
    wide = np.float64 if X.dtype == np.float32 else np.longdouble
    return X.astype(wide).T @ delta_h.astype(wide)


def grad_b_h_reference(delta_h):
    wide = np.float64 if delta_h.dtype == np.float32 else np.longdouble
    return delta_h.astype(wide).sum(axis=0)


# --------------------------------------------------------------------------
# Cost of the network, for finite differences (float64)
# --------------------------------------------------------------------------


def network_cost(X, Y, W_h, b_h, W_out, b_out, l2=0.0):
    """J + (λ/2)(Σ W_h² + Σ W_out²) for the sigmoid network, float64 NumPy."""
    A_h = 1 / (1 + np.exp(-(X @ W_h + b_h)))
    A_out = 1 / (1 + np.exp(-(A_h @ W_out + b_out)))
    J = -np.sum(Y * np.log(A_out) + (1 - Y) * np.log(1 - A_out))
    return J + 0.5 * l2 * (np.sum(W_h**2) + np.sum(W_out**2))


# --------------------------------------------------------------------------
# A rounding bound for "fused step vs the same step composed of unfused
# public functions"
# --------------------------------------------------------------------------

# Relative error of one computed sigmoid, in units of u: exp is within
# 1 ulp (≤ 2u relative), then one addition, one division, and the error of
# e^{±z} carried through 1/(1+e) or e/(1+e) (≤ 2u): 6u, rounded up to 8u.
SIGMOID_ULPS = 8


def backprop_rounding_bound(X, Y, W_h, b_h, W_out, b_out, l2, dtype):
    """Elementwise bounds on |fused − composed| for the cost and gradients.

    Both computations evaluate the same formulas with the same operations
    but different summation orders, so each is within the first-order
    rounding bound E of the exact values, and the two differ by at most 2E.
    E is propagated through the network (running error analysis, first
    order in u; second-order terms are below the factor 2 of slack kept by
    rounding SIGMOID_ULPS up and by γ_k ≥ k u):

    * a k-term sum (any order, fused multiply-adds or not) of terms t_i:
      |error| ≤ γ_k Σ|t_i| (Higham, Accuracy and Stability, §4.2);
    * z = x W + b is a sum of m + 1 terms;
    * φ is 1/4-Lipschitz and computed with relative error ≤ SIGMOID_ULPS·u;
    * errors in a factor propagate linearly through products and sums.

    Returns a dict with the same keys as fastbp's BackpropResult fields.
    All arithmetic is float64 on absolute values (for float64 inputs the
    bound itself is then accurate to about 1e-16 relative).
    """
    u = unit_roundoff(dtype)
    f = np.float64
    X, Y, W_h, b_h, W_out, b_out = (np.asarray(a, dtype=f) for a in (X, Y, W_h, b_h, W_out, b_out))
    n, m = X.shape
    d, t = W_out.shape
    s = SIGMOID_ULPS * u

    A_h = 1 / (1 + np.exp(-(X @ W_h + b_h)))
    A_out = 1 / (1 + np.exp(-(A_h @ W_out + b_out)))
    delta_out = A_out - Y
    back = delta_out @ W_out.T
    sig_d = A_h * (1 - A_h)
    delta_h = back * sig_d

    E_zh = gamma(m + 1, dtype) * (np.abs(X) @ np.abs(W_h) + np.abs(b_h))
    E_ah = E_zh / 4 + s * A_h
    E_zo = E_ah @ np.abs(W_out) + gamma(d + 1, dtype) * (A_h @ np.abs(W_out) + np.abs(b_out))
    E_ao = E_zo / 4 + s * A_out
    E_do = E_ao + u * np.abs(delta_out)
    E_back = E_do @ np.abs(W_out).T + gamma(t, dtype) * (np.abs(delta_out) @ np.abs(W_out).T)
    # δ_h = (s·a)·(1 − a): 1 − a, and two products, each one rounding.
    E_sig_d = E_ah * np.abs(1 - 2 * A_h) + 3 * u * sig_d
    E_dh = E_back * sig_d + np.abs(back) * E_sig_d

    bound = {
        "grad_W_h": np.abs(X).T @ E_dh + gamma(n, dtype) * (np.abs(X).T @ np.abs(delta_h)),
        "grad_b_h": E_dh.sum(axis=0) + gamma(n, dtype) * np.abs(delta_h).sum(axis=0),
        "grad_W_out": A_h.T @ E_do
        + E_ah.T @ np.abs(delta_out)
        + gamma(n, dtype) * (A_h.T @ np.abs(delta_out)),
        "grad_b_out": E_do.sum(axis=0) + gamma(n, dtype) * np.abs(delta_out).sum(axis=0),
    }
    # Cost: dJ/da = (a − y)/(a(1 − a)); each log is within 1 ulp in float64
    # of a value that is exact (a, 1 − a of a float32/float64 a), and the
    # n t terms are summed in float64.
    u64 = unit_roundoff(np.float64)
    with np.errstate(divide="ignore"):
        sensitivity = Y / A_out + (1 - Y) / (1 - A_out)
    terms = np.abs(Y * np.log(A_out)) + np.abs((1 - Y) * np.log(1 - A_out))
    E_cost = np.sum(sensitivity * E_ao) + (2 * u64 + gamma(2 * n * t + 2, np.float64)) * terms.sum()
    if l2:
        # λW added once to each gradient: one more rounding, same in both.
        bound["grad_W_h"] = bound["grad_W_h"] + u * np.abs(bound["grad_W_h"] + l2 * np.abs(W_h))
        bound["grad_W_out"] = bound["grad_W_out"] + u * np.abs(
            bound["grad_W_out"] + l2 * np.abs(W_out)
        )
        squares = np.sum(W_h**2) + np.sum(W_out**2)
        E_cost += gamma(m * d + d * t + 2, np.float64) * 0.5 * l2 * squares
    # The cost is rounded once to the dtype at the end.
    total = network_cost(X, Y, W_h, b_h, W_out, b_out, l2)
    bound["cost"] = E_cost + u * abs(total)
    return {key: 2 * value for key, value in bound.items()}


# --------------------------------------------------------------------------
# Raschka's NeuralNetMLP, transcribed (chapter 12), float64
# --------------------------------------------------------------------------


def book_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -250, 250)))


def book_one_hot(y, n_classes):
    onehot = np.zeros((n_classes, y.shape[0]))
    for idx, val in enumerate(y.astype(int)):
        onehot[val, idx] = 1.0
    return onehot.T


def book_step(X_batch, Y_batch, w_h, b_h, w_out, b_out, eta, l2):
    """One update of NeuralNetMLP.fit's inner loop; returns new weights."""
    z_h = np.dot(X_batch, w_h) + b_h
    a_h = book_sigmoid(z_h)
    z_out = np.dot(a_h, w_out) + b_out
    a_out = book_sigmoid(z_out)
    delta_out = a_out - Y_batch
    sigmoid_derivative_h = a_h * (1.0 - a_h)
    delta_h = np.dot(delta_out, w_out.T) * sigmoid_derivative_h
    grad_w_h = np.dot(X_batch.T, delta_h)
    grad_b_h = np.sum(delta_h, axis=0)
    grad_w_out = np.dot(a_h.T, delta_out)
    grad_b_out = np.sum(delta_out, axis=0)
    delta_w_h = grad_w_h + l2 * w_h
    delta_b_h = grad_b_h
    delta_w_out = grad_w_out + l2 * w_out
    delta_b_out = grad_b_out
    return (
        w_h - eta * delta_w_h,
        b_h - eta * delta_b_h,
        w_out - eta * delta_w_out,
        b_out - eta * delta_b_out,
    )


def book_initial_weights(rng, m, d, t):
    """As NeuralNetMLP, with a numpy Generator: W_h then W_out from N(0, 0.1²)."""
    w_h = rng.normal(loc=0.0, scale=0.1, size=(m, d))
    w_out = rng.normal(loc=0.0, scale=0.1, size=(d, t))
    return w_h, np.zeros(d), w_out, np.zeros(t)


def book_minibatches(n, minibatch_size, shuffle, rng):
    """The book's epoch order: shuffle arange(n) in place, full minibatches only."""
    indices = np.arange(n)
    if shuffle:
        rng.shuffle(indices)
    return [
        indices[start_idx : start_idx + minibatch_size]
        for start_idx in range(0, indices.shape[0] - minibatch_size + 1, minibatch_size)
    ]


def step_rounding_bound(X_batch, Y_batch, W_h, b_h, W_out, b_out, eta, l2, dtype):
    """Bound on |fastbp step − book step| from the same weights, elementwise.

    W' = W − η (g + λW).  The two gradients differ by at most the
    :func:`backprop_rounding_bound` (both are within half of it of the exact
    gradient, and the book's NumPy products and sigmoid obey the same
    per-operation bounds).  The update adds, in each code, one rounding for
    λW, one for g + λW, one for η·(…) and one for the subtraction.
    """
    u = unit_roundoff(dtype)
    bound = backprop_rounding_bound(X_batch, Y_batch, W_h, b_h, W_out, b_out, l2, dtype)
    new = book_step(X_batch, Y_batch, W_h, b_h, W_out, b_out, eta, l2)
    weights = (W_h, b_h, W_out, b_out)
    keys = ("grad_W_h", "grad_b_h", "grad_W_out", "grad_b_out")
    result = []
    for w, w_new, key in zip(weights, new, keys):
        step = np.abs(w - w_new)  # η |g + λW|
        result.append(eta * bound[key] + 2 * u * (2 * step + np.abs(w_new) + eta * l2 * np.abs(w)))
    return result


def random_network(rng, n, m, d, t, dtype, scale=0.5):
    """(X, Y, W_h, b_h, W_out, b_out) in ``dtype``: X in [0, 1), Y one-hot, weights N(0, scale²)."""
    X = rng.random((n, m))
    Y = np.eye(t)[rng.integers(0, t, n)]
    W_h = rng.normal(0, scale, (m, d))
    b_h = rng.normal(0, scale, d)
    W_out = rng.normal(0, scale, (d, t))
    b_out = rng.normal(0, scale, t)
    return tuple(a.astype(dtype) for a in (X, Y, W_h, b_h, W_out, b_out))
