"""Plain-NumPy references, data makers and rounding bounds for the tests.

Never shipped.  The module holds:

* data makers: exactly summable and random (A_h, δ) pairs, random networks,
  and small classification problems;
* plain-NumPy references for the forward pass, the cost, the output- and
  hidden-layer gradients, and the network cost for finite differences;
* a transcription of Raschka's ``NeuralNetMLP`` (the book's algorithm,
  chapter 12), for the training tests;
* rounding bounds: the unit roundoff u, γ_n = n u / (1 − n u), and the
  elementwise bounds the tests allow between fastbp and the references.

Everything here is written independently of the package, as directly as
possible from the formulas, so that a bug in fastbp cannot hide in a shared
helper and the tests compare fastbp against code whose correctness is
evident on reading.
"""

import numpy as np

# --------------------------------------------------------------------------
# Data makers
# --------------------------------------------------------------------------

FLOAT_DTYPES = (np.float32, np.float64)

# Sizes the bitwise tests sweep: edge cases, primes, and numbers that are not
# multiples of any block size or unroll factor.
N_VALUES = (0, 1, 2, 3, 7, 64, 65, 1000, 4099)
DT_VALUES = ((1, 1), (1, 7), (13, 1), (5, 3), (37, 11), (100, 10), (131, 17))


def exact_pair(n, d, t, dtype, rng):
    """A_h and δ_out whose every product and partial sum is exact in ``dtype``.

    A_h = i/8 with i in 0..15 and δ = k/4 with k in −8..8: each product is a
    multiple of 2^-5 below 2^2 in magnitude, so any sum of up to 2^17 of
    them is a multiple of 2^-5 below 2^19 and needs at most 24 significant
    bits: exact in float32 and float64, in any summation order.
    """
    assert n <= 2**17
    A_h = (rng.integers(0, 16, size=(n, d)) / 8).astype(dtype)
    delta = (rng.integers(-8, 9, size=(n, t)) / 4).astype(dtype)
    return A_h, delta


def random_pair(n, d, t, dtype, rng):
    """Sigmoid-like activations in (0, 1) and errors in (−1, 1)."""
    A_h = rng.random((n, d)).astype(dtype)
    delta = (rng.random((n, t)) * 2 - 1).astype(dtype)
    return A_h, delta


def make_network(n, m, d, t, dtype, rng):
    """Random inputs, weights, biases and [0, 1] targets of a small network."""
    return dict(
        X=rng.random((n, m)).astype(dtype),
        W_h=rng.normal(0, 0.5, (m, d)).astype(dtype),
        b_h=rng.normal(0, 0.5, d).astype(dtype),
        W_out=rng.normal(0, 0.5, (d, t)).astype(dtype),
        b_out=rng.normal(0, 0.5, t).astype(dtype),
        Y=rng.random((n, t)).astype(dtype),
    )


def random_network(rng, n, m, d, t, dtype, scale=0.5):
    """(X, Y, W_h, b_h, W_out, b_out) in ``dtype``: X in [0, 1), Y one-hot, weights N(0, scale²)."""
    X = rng.random((n, m))
    Y = np.eye(t)[rng.integers(0, t, n)]
    W_h = rng.normal(0, scale, (m, d))
    b_h = rng.normal(0, scale, d)
    W_out = rng.normal(0, scale, (d, t))
    b_out = rng.normal(0, scale, t)
    return tuple(a.astype(dtype) for a in (X, Y, W_h, b_h, W_out, b_out))


def small_problem(seed=0, n=23, m=6, t=3):
    """Features X in [0, 1) of shape (n, m) and integer labels y in 0..t−1.

    The first t labels are 0..t−1, so every class is present and
    t = y.max() + 1.
    """
    rng = np.random.default_rng(seed)
    X = rng.random((n, m))
    y = rng.integers(0, t, n)
    y[:t] = np.arange(t)  # every class present, so t = y.max() + 1
    return X, y


# --------------------------------------------------------------------------
# Rounding: unit roundoff and γ_n
# --------------------------------------------------------------------------


def unit_roundoff(dtype):
    """u: 2^-24 for float32, 2^-53 for float64, 2^-64 for x87 long double."""
    return float(np.finfo(dtype).eps) / 2


def gamma(n, u):
    """γ_n = n u / (1 − n u): bound on the relative error of an n-term sum (Higham §3.1)."""
    return n * u / (1 - n * u)


# --------------------------------------------------------------------------
# Output layer: the outer-product sum and its rounding bound
# --------------------------------------------------------------------------


def wide(dtype):
    """The reference precision for ``dtype``."""
    return np.float64 if np.dtype(dtype) == np.float32 else np.longdouble


def outer_sum_reference(A_h, delta):
    """Σ_i a^{[i]} ⊗ δ^{[i]} in the wide precision (the seed's §7 sum)."""
    w = wide(A_h.dtype)
    return np.einsum("ij,ik->jk", A_h.astype(w), delta.astype(w))


def rounding_bound(A_h, delta):
    """γ_n(u) · |A_h|ᵀ|δ| plus the wide reference's own γ_n(u_ref) share."""
    n = A_h.shape[0]
    w = wide(A_h.dtype)
    magnitude = np.abs(A_h.astype(w)).T @ np.abs(delta.astype(w))
    return (gamma(n, unit_roundoff(A_h.dtype)) + gamma(n, unit_roundoff(w))) * magnitude


def assert_within_bound(result, A_h, delta):
    """Assert every element of ``result`` lies within the rounding bound of the exact sum."""
    reference = outer_sum_reference(A_h, delta)
    bound = rounding_bound(A_h, delta)
    error = np.abs(result.astype(reference.dtype) - reference)
    worst = np.unravel_index(np.argmax(error - bound), error.shape) if error.size else None
    assert np.all(error <= bound), (
        f"element {worst}: error {error[worst]:.3e} exceeds bound {bound[worst]:.3e}"
    )


# --------------------------------------------------------------------------
# Forward pass and cost
# --------------------------------------------------------------------------


def sigmoid_reference(Z):
    """φ(Z) in long double, stable for either sign."""
    Z = np.asarray(Z, dtype=np.longdouble)
    out = np.empty_like(Z)
    positive = Z >= 0
    out[positive] = 1 / (1 + np.exp(-Z[positive]))
    e = np.exp(Z[~positive])
    out[~positive] = e / (1 + e)
    return out


def forward_reference(X, W_h, b_h, W_out, b_out):
    """The seed's forward pass in long double."""
    L = np.longdouble
    A_h = sigmoid_reference(X.astype(L) @ W_h.astype(L) + b_h.astype(L))
    A_out = sigmoid_reference(A_h @ W_out.astype(L) + b_out.astype(L))
    return A_h, A_out


def cost_reference(A_out, Y):
    """J = −Σ y log a + (1 − y) log(1 − a), with fastbp's documented clamping."""
    a = A_out.astype(np.float64)
    y = Y.astype(np.float64)
    tiny = np.finfo(A_out.dtype).tiny
    log_a = np.log(np.where((a >= 0) & (a < tiny), tiny, a))
    log_1ma = np.log(np.where((1 - a >= 0) & (1 - a < tiny), tiny, 1 - a))
    term = np.where(y != 0, y * log_a, 0.0) + np.where(y != 1, (1 - y) * log_1ma, 0.0)
    return -term.sum()


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

    E_zh = gamma(m + 1, u) * (np.abs(X) @ np.abs(W_h) + np.abs(b_h))
    E_ah = E_zh / 4 + s * A_h
    E_zo = E_ah @ np.abs(W_out) + gamma(d + 1, u) * (A_h @ np.abs(W_out) + np.abs(b_out))
    E_ao = E_zo / 4 + s * A_out
    E_do = E_ao + u * np.abs(delta_out)
    E_back = E_do @ np.abs(W_out).T + gamma(t, u) * (np.abs(delta_out) @ np.abs(W_out).T)
    # δ_h = (s·a)·(1 − a): 1 − a, and two products, each one rounding.
    E_sig_d = E_ah * np.abs(1 - 2 * A_h) + 3 * u * sig_d
    E_dh = E_back * sig_d + np.abs(back) * E_sig_d

    bound = {
        "grad_W_h": np.abs(X).T @ E_dh + gamma(n, u) * (np.abs(X).T @ np.abs(delta_h)),
        "grad_b_h": E_dh.sum(axis=0) + gamma(n, u) * np.abs(delta_h).sum(axis=0),
        "grad_W_out": A_h.T @ E_do
        + E_ah.T @ np.abs(delta_out)
        + gamma(n, u) * (A_h.T @ np.abs(delta_out)),
        "grad_b_out": E_do.sum(axis=0) + gamma(n, u) * np.abs(delta_out).sum(axis=0),
    }
    # Cost: dJ/da = (a − y)/(a(1 − a)); each log is within 1 ulp in float64
    # of a value that is exact (a, 1 − a of a float32/float64 a), and the
    # n t terms are summed in float64.
    u64 = unit_roundoff(np.float64)
    with np.errstate(divide="ignore"):
        sensitivity = Y / A_out + (1 - Y) / (1 - A_out)
    terms = np.abs(Y * np.log(A_out)) + np.abs((1 - Y) * np.log(1 - A_out))
    E_cost = np.sum(sensitivity * E_ao) + (2 * u64 + gamma(2 * n * t + 2, u64)) * terms.sum()
    if l2:
        # λW added once to each gradient: one more rounding, same in both.
        bound["grad_W_h"] = bound["grad_W_h"] + u * np.abs(bound["grad_W_h"] + l2 * np.abs(W_h))
        bound["grad_W_out"] = bound["grad_W_out"] + u * np.abs(
            bound["grad_W_out"] + l2 * np.abs(W_out)
        )
        squares = np.sum(W_h**2) + np.sum(W_out**2)
        E_cost += gamma(m * d + d * t + 2, u64) * 0.5 * l2 * squares
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


# --------------------------------------------------------------------------
# Private training: per-example gradients, independently of fastbp's per-example code
# --------------------------------------------------------------------------


def one_example_grads(X, Y, W_h, b_h, W_out, b_out):
    """Each example's four gradients, stacked: fastbp.backprop on that example alone.

    Independent of :func:`fastbp.per_example_grads` and of the fused step's norms and
    clipping: a one-example call sums nothing, so each gradient is that example's own.
    """
    import fastbp

    grads = [
        fastbp.backprop(X[i : i + 1], Y[i : i + 1], W_h, b_h, W_out, b_out) for i in range(len(X))
    ]
    return [np.stack([g[k] for g in grads]) for k in range(1, 5)]
