"""Privacy accounting for DP-SGD: ε from the noise, and the noise from a target ε.

What is accounted
-----------------
One step of DP-SGD, as this module models it, is the *Poisson-subsampled
Gaussian mechanism*: every training example joins the step's batch
independently with probability ``sample_rate``; each example's gradient is
clipped to L2 norm at most ``max_grad_norm``; the clipped gradients are summed
and Gaussian noise with standard deviation ``noise_multiplier * max_grad_norm``
is added to every coordinate of the sum. ``steps`` such steps are composed
adaptively. ``max_grad_norm`` cancels out: only the ratio ``noise_multiplier``
of the noise's standard deviation to the sum's L2 sensitivity enters the
accounting.

The guarantee is (ε, δ)-differential privacy under the *add-or-remove-one*
adjacency as Google's ``dp-accounting`` package defines it
(``NeighboringRelation.ADD_OR_REMOVE_ONE``): two datasets are neighbours when
one is the other with one example added or removed. It covers everything the
mechanism releases, every intermediate model included, not only the final one.
It does not cover anything computed from the data outside the mechanism (a
loss or cost reported on the training data, for example), and it holds only
if batches really are drawn by Poisson sampling; see ``docs/privacy.md``.

The mathematics is ``dp-accounting``'s (Apache-2.0), not re-derived here:
this module validates its arguments, builds the ``DpEvent``
``SelfComposedDpEvent(PoissonSampledDpEvent(sample_rate,
GaussianDpEvent(noise_multiplier)), steps)`` (with ``sample_rate == 1``, the
same mechanism without sampling, ``SelfComposedDpEvent(GaussianDpEvent(...),
steps)``) and hands it to one of two accountants:

``"rdp"``
    ``dp_accounting.rdp.RdpAccountant`` with its default Rényi orders: the
    Rényi-DP analysis of the subsampled Gaussian mechanism (Abadi et al., 2016;
    Mironov, Talwar and Zhang, 2019) with the RDP-to-(ε, δ) conversion of
    Canonne, Kamath and Steinke (2020, Prop. 12 of arXiv:2004.00010 v4). Fast
    (up to tens of milliseconds per call). Looser: for noise multipliers 0.35
    to 2, sample rates 0.001 to 1 and 2 to 30000 steps its ε was 1.06 to 1.7
    times the PLD accountant's.
``"pld"``
    ``dp_accounting.pld.PLDAccountant`` with its default discretisation
    interval (1e-4) and pessimistic rounding: numerical composition of
    privacy loss distributions (Koskela et al., 2020; Doroshenko et al.,
    2022). Slower (a tenth of a second to a few seconds per call, more as the
    noise shrinks); close to the true ε for this mechanism, so usually
    smaller than the RDP bound, though that is not guaranteed.

Both are upper bounds on the smallest ε for which the mechanism is
(ε, δ)-DP; neither is exact.

``dp-accounting`` is an optional dependency (``pip install 'fastbp[privacy]'``).
Importing this module does not import it; each function imports it when called
and raises ``ImportError`` naming the extra when it is missing.

References
----------
M. Abadi et al., "Deep Learning with Differential Privacy", CCS 2016.
I. Mironov, K. Talwar and L. Zhang, "Rényi Differential Privacy of the Sampled
Gaussian Mechanism", arXiv:1908.10530, 2019.
C. Canonne, G. Kamath and T. Steinke, "The Discrete Gaussian for Differential
Privacy", NeurIPS 2020, arXiv:2004.00010.
A. Koskela, J. Jälkö and A. Honkela, "Computing Tight Differential Privacy
Guarantees Using FFT", AISTATS 2020.
V. Doroshenko, B. Ghazi, P. Kamath, R. Kumar and P. Manurangsi, "Connect the
Dots: Tighter Discrete Approximations of Privacy Loss Distributions",
PETS 2022.
"""

import math

from ._validate import (
    check_delta,
    check_noise_multiplier,
    check_sample_rate,
    check_target_epsilon,
    non_negative_int,
    one_of,
)

__all__ = ["ACCOUNTANTS", "epsilon", "noise_multiplier"]

#: The accountant names that ``epsilon`` and ``noise_multiplier`` accept.
ACCOUNTANTS = ("rdp", "pld")

# Absolute tolerance, in noise-multiplier units, that noise_multiplier asks of
# dp_accounting.calibrate_dp_mechanism (its own default for continuous parameters).
_CALIBRATION_TOL = 1e-6

_MISSING_EXTRA = (
    "fastbp.privacy needs the optional dependency dp-accounting (Google's differential "
    "privacy accounting library); install it with: pip install 'fastbp[privacy]'"
)


def _import_dp_accounting():
    """Import ``dp_accounting`` on first use, naming the extra when it is missing."""
    try:
        import dp_accounting
    except ImportError as error:
        raise ImportError(_MISSING_EXTRA) from error
    return dp_accounting


# --------------------------------------------------------------------------- accounting


def _dp_sgd_event(dp_accounting, noise_multiplier, sample_rate, steps):
    """The ``DpEvent`` of ``steps`` Poisson-subsampled Gaussian steps (``steps`` >= 1)."""
    step = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sample_rate < 1:
        step = dp_accounting.PoissonSampledDpEvent(sample_rate, step)
    # With sample_rate == 1 every example is in every batch: the step *is* the
    # Gaussian mechanism, and the plain GaussianDpEvent lets the PLD accountant
    # compose it exactly (one Gaussian of std noise_multiplier / sqrt(steps))
    # instead of numerically.
    return dp_accounting.SelfComposedDpEvent(step, steps)


def _new_accountant(dp_accounting, accountant):
    if accountant == "rdp":
        return dp_accounting.rdp.RdpAccountant()
    return dp_accounting.pld.PLDAccountant()


def _composed_accountant(noise_multiplier, sample_rate, steps, accountant):
    """A fresh ``dp_accounting`` accountant with the DP-SGD event composed (validated inputs)."""
    dp_accounting = _import_dp_accounting()
    composed = _new_accountant(dp_accounting, accountant)
    composed.compose(_dp_sgd_event(dp_accounting, noise_multiplier, sample_rate, steps))
    return composed


def epsilon(noise_multiplier, sample_rate, steps, delta, accountant="rdp"):
    """ε of DP-SGD: the Poisson-subsampled Gaussian mechanism composed ``steps`` times.

    Parameters
    ----------
    noise_multiplier : float
        Ratio of the Gaussian noise's standard deviation to the L2 sensitivity
        of the summed clipped gradients (``max_grad_norm``), >= 0 and finite.
        0 (no noise) gives ``math.inf`` when ``steps`` > 0.
    sample_rate : float
        Probability, in (0, 1], with which each example joins each step's
        batch, independently of the other examples and of the other steps
        (Poisson sampling). The expected batch size is ``sample_rate * n``.
    steps : int
        Number of noisy steps taken, >= 0. 0 gives ε = 0 (nothing released).
    delta : float
        Target δ, in (0, 1). Usually well below ``1 / n`` for ``n`` examples.
    accountant : {"rdp", "pld"}, default "rdp"
        ``"rdp"``: ``dp_accounting.rdp.RdpAccountant`` (Rényi DP, default
        orders); fast, looser. ``"pld"``: ``dp_accounting.pld.PLDAccountant``
        (privacy loss distributions, discretisation interval 1e-4); slower,
        tighter. See the module docstring.

    Returns
    -------
    float
        An upper bound on the smallest ε for which the mechanism is
        (ε, ``delta``)-differentially private under add-or-remove-one
        adjacency; ``math.inf`` when the accountant finds no finite bound.

    Raises
    ------
    TypeError
        If a number is given as a bool, a string or another non-real type,
        ``steps`` is not an int, or ``accountant`` is not a str.
    ValueError
        If a value is NaN, infinite or outside its range, or ``accountant`` is
        not ``"rdp"`` or ``"pld"``.
    ImportError
        If ``dp-accounting`` is not installed (``pip install 'fastbp[privacy]'``).

    See Also
    --------
    noise_multiplier : the inverse, the noise needed for a target ε.

    Notes
    -----
    The accounting assumes Poisson sampling with rate ``sample_rate``.
    Shuffling the data and cutting it into fixed-size batches is a different
    mechanism, for which this ε is not a proven bound.

    Examples
    --------
    The TF Privacy MNIST tutorial's DP-SGD (60000 examples, expected batch
    size 256, noise multiplier 1.1, 60 epochs) at δ = 1e-5, with the steps
    counted as TF Privacy's ``compute_dp_sgd_privacy`` counts them:

    >>> import math
    >>> from fastbp.privacy import epsilon
    >>> steps = math.ceil(60 * 60000 / 256)
    >>> round(epsilon(1.1, 256 / 60000, steps, 1e-5), 3)
    2.597
    >>> round(epsilon(1.1, 256 / 60000, steps, 1e-5, accountant="pld"), 3)  # doctest: +SKIP
    2.382
    """
    noise_multiplier = check_noise_multiplier(noise_multiplier)
    sample_rate = check_sample_rate(sample_rate)
    steps = non_negative_int(steps, "steps")
    delta = check_delta(delta)
    accountant = one_of(accountant, "accountant", ACCOUNTANTS)
    _import_dp_accounting()  # the extra is required whatever the arguments
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    composed = _composed_accountant(noise_multiplier, sample_rate, steps, accountant)
    return float(composed.get_epsilon(delta))


def noise_multiplier(target_epsilon, delta, sample_rate, steps, accountant="rdp"):
    """The smallest noise multiplier for which DP-SGD's ε is at most ``target_epsilon``.

    The inverse of :func:`epsilon` in its first argument, found by
    ``dp_accounting.calibrate_dp_mechanism`` (Brent's method on
    ``epsilon(sigma, sample_rate, steps, delta, accountant) - target_epsilon``,
    searching from the bracket [0, 1] and doubling it as needed).

    Parameters
    ----------
    target_epsilon : float
        The ε to reach, > 0 and finite.
    delta : float
        Target δ, in (0, 1).
    sample_rate : float
        Poisson sampling rate of each step, in (0, 1]; see :func:`epsilon`.
    steps : int
        Number of noisy steps, >= 0. 0 returns 0.0: with no step nothing is
        released, so no noise is needed.
    accountant : {"rdp", "pld"}, default "rdp"
        As in :func:`epsilon`. The search evaluates ε some 15 to 20 times, so
        ``"pld"`` takes seconds to a minute.

    Returns
    -------
    float
        A noise multiplier ``sigma`` with
        ``epsilon(sigma, sample_rate, steps, delta, accountant) <= target_epsilon``
        that is within an absolute tolerance of 1e-6 of the smallest such
        value (``calibrate_dp_mechanism``'s ``tol``, in noise-multiplier
        units): ``sigma`` is never too small, and at most 1e-6 larger than
        needed.

    Raises
    ------
    TypeError
        If a number is given as a bool, a string or another non-real type,
        ``steps`` is not an int, or ``accountant`` is not a str.
    ValueError
        If a value is NaN, infinite or outside its range, or ``accountant`` is
        not ``"rdp"`` or ``"pld"``.
    ImportError
        If ``dp-accounting`` is not installed (``pip install 'fastbp[privacy]'``).

    See Also
    --------
    epsilon : ε for a given noise multiplier.

    Examples
    --------
    >>> from fastbp.privacy import epsilon, noise_multiplier
    >>> sigma = noise_multiplier(1.0, 1e-5, 256 / 60000, 14063)
    >>> round(sigma, 4)
    2.1785
    >>> epsilon(sigma, 256 / 60000, 14063, 1e-5) <= 1.0
    True
    """
    target_epsilon = check_target_epsilon(target_epsilon)
    delta = check_delta(delta)
    sample_rate = check_sample_rate(sample_rate)
    steps = non_negative_int(steps, "steps")
    accountant = one_of(accountant, "accountant", ACCOUNTANTS)
    dp_accounting = _import_dp_accounting()
    if steps == 0:
        return 0.0

    def make_event(sigma):
        # calibrate_dp_mechanism only tries sigma >= 0; at 0 epsilon is inf.
        return _dp_sgd_event(dp_accounting, sigma, sample_rate, steps)

    def make_accountant():
        return _new_accountant(dp_accounting, accountant)

    sigma = dp_accounting.calibrate_dp_mechanism(
        make_accountant, make_event, target_epsilon, delta, tol=_CALIBRATION_TOL
    )
    return float(sigma)
