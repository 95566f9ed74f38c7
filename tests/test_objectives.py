"""distillstudy.objectives: golden values against plain re-statements of each authors'
reference code, the papers' identities, stacking, gradients, stability and errors.

The `ref_*` functions below restate the reference implementations step by step in
plain Python floats (no torch), one example and one class at a time, so that they
share no code path with the module:
  kd         Hinton et al. 2015 (the project's engine.losses.soft_kl)
  logit_mse  engine.losses.centred_logit_mse
  dkd        megvii-research/mdistiller mdistiller/distillers/DKD.py (e8c5bb3): torch.log of the
             summed binary probabilities; the target removed by subtracting 1000 from its logit
  dist       hunto/image_classification_sota lib/models/losses/dist_kd.py (d9662f7, the
             classification submodule of hunto/DIST_KD)
  ls_kd      sunshangquan/logit-standardization-KD mdistiller/distillers/KD.py (6083e2d):
             unbiased std, (x - mean) / (1e-7 + std)
  nkd        yzd-v/cls_KD mmcls/models/dis_losses/nkd.py (9466b3f): the target removed by indexing
"""

import math

import pytest
import torch
from distillstudy import objectives
from distillstudy.engine import losses

F64 = torch.float64
HYPERS = {
    "kd": [{"temperature": 1.0}, {"temperature": 4.0}],
    "logit_mse": [{}],
    "dkd": [{"alpha": 1.0, "beta": 8.0, "temperature": 4.0}, {"alpha": 0.5, "beta": 2.0, "temperature": 1.0}],
    "dist": [{"beta": 1.0, "gamma": 1.0, "temperature": 1.0}, {"beta": 2.0, "gamma": 0.5, "temperature": 4.0}],
    "ls_kd": [{"temperature": 2.0}, {"temperature": 0.5}],
    "nkd": [{"gamma": 1.5, "temperature": 1.0}, {"gamma": 1.0, "temperature": 3.0}],
}
CASES = [(name, h) for name in objectives.NAMES for h in HYPERS[name]]
CASE_IDS = [f"{n}-" + "-".join(f"{k}{v:g}" for k, v in h.items()) for n, h in CASES]


def data(seed, shape, classes, scale=3.0, dtype=F64):
    """Student and teacher logits (*shape, classes) and labels (*shape)."""
    g = torch.Generator().manual_seed(seed)
    s = scale * torch.randn(*shape, classes, generator=g, dtype=dtype)
    t = scale * torch.randn(*shape, classes, generator=g, dtype=dtype) + 2.0
    y = torch.randint(0, classes, tuple(shape), generator=g)
    return s, t, y


# ---------- plain-Python re-statements of the references (one model: lists of rows) ----------

def softmax(row, temp=1.0):
    z = [v / temp for v in row]
    m = max(z)
    e = [math.exp(v - m) for v in z]
    total = sum(e)
    return [v / total for v in e]


def log_softmax(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def kl_div_sum(log_input, target):
    """torch.nn.functional.kl_div(log_input, target) summed: target (log target - input), 0 where target is 0."""
    return sum(p * (math.log(p) - q) for p, q in zip(target, log_input) if p > 0)


def ref_kd(S, T, Y, temperature):
    total = 0.0
    for s, t in zip(S, T):
        total += kl_div_sum([math.log(q) for q in softmax(s, temperature)], softmax(t, temperature))
    return temperature**2 * total / len(S)


def ref_logit_mse(S, T, Y):
    total = 0.0
    for s, t in zip(S, T):
        ms, mt = sum(s) / len(s), sum(t) / len(t)
        total += sum(((a - ms) - (b - mt)) ** 2 for a, b in zip(s, t))
    return total / len(S) / (2 * len(S[0]))


def ref_dkd(S, T, Y, alpha, beta, temperature):
    tckd = nckd = 0.0
    for s, t, y in zip(S, T, Y):
        ps, pt = softmax(s, temperature), softmax(t, temperature)
        bs = [ps[y], sum(p for c, p in enumerate(ps) if c != y)]
        bt = [pt[y], sum(p for c, p in enumerate(pt) if c != y)]
        tckd += kl_div_sum([math.log(v) for v in bs], bt)
        s2 = [v / temperature - (1000.0 if c == y else 0.0) for c, v in enumerate(s)]
        t2 = [v / temperature - (1000.0 if c == y else 0.0) for c, v in enumerate(t)]
        nckd += kl_div_sum(log_softmax(s2), softmax(t2))
    n = len(S)
    return alpha * (tckd * temperature**2 / n) + beta * (nckd * temperature**2 / n)


def pearson(a, b, eps=1e-8):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    a, b = [v - ma for v in a], [v - mb for v in b]
    na, nb = math.sqrt(sum(v * v for v in a)), math.sqrt(sum(v * v for v in b))
    return sum(x * y for x, y in zip(a, b)) / (na * nb + eps)


def ref_dist(S, T, Y, beta, gamma, temperature):
    ps = [softmax(s, temperature) for s in S]
    pt = [softmax(t, temperature) for t in T]
    inter = 1 - sum(pearson(a, b) for a, b in zip(ps, pt)) / len(ps)
    cols = range(len(ps[0]))
    intra = 1 - sum(pearson([r[c] for r in ps], [r[c] for r in pt]) for c in cols) / len(cols)
    return beta * temperature**2 * inter + gamma * temperature**2 * intra


def standardise(row):
    m = sum(row) / len(row)
    std = math.sqrt(sum((v - m) ** 2 for v in row) / (len(row) - 1))
    return [(v - m) / (1e-7 + std) for v in row]


def ref_ls_kd(S, T, Y, temperature):
    return ref_kd([standardise(s) for s in S], [standardise(t) for t in T], Y, temperature)


def ref_nkd(S, T, Y, gamma, temperature):
    target = non = 0.0
    for s, t, y in zip(S, T, Y):
        target += softmax(t)[y] * math.log(softmax(s)[y])
        s_n = [v for c, v in enumerate(s) if c != y]
        t_n = [v for c, v in enumerate(t) if c != y]
        non += sum(p * math.log(q) for p, q in zip(softmax(t_n, temperature), softmax(s_n, temperature)))
    n = len(S)
    return -target / n - gamma * temperature**2 * (non / n)


REFS = {"kd": ref_kd, "logit_mse": ref_logit_mse, "dkd": ref_dkd, "dist": ref_dist, "ls_kd": ref_ls_kd,
        "nkd": ref_nkd}


def reference(name, s, t, y, **hyper):
    return REFS[name](s.tolist(), t.tolist(), y.tolist(), **hyper)


# ---------- golden values ----------

def test_names_and_hyper_parameters():
    assert objectives.NAMES == ("kd", "logit_mse", "dkd", "dist", "ls_kd", "nkd")
    assert objectives.HYPER == {"kd": ("temperature",), "logit_mse": (), "dkd": ("alpha", "beta", "temperature"),
                                "dist": ("beta", "gamma", "temperature"), "ls_kd": ("temperature",),
                                "nkd": ("gamma", "temperature")}


@pytest.mark.parametrize("name,hyper", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("batch,classes", [(1, 2), (6, 2), (5, 10), (32, 10)])
def test_equals_reference_restatement(name, hyper, batch, classes):
    for seed in range(3):
        s, t, y = data(100 * seed + batch + classes, (batch,), classes)
        got = objectives.term(name, s, t, y, **hyper)
        assert got.shape == () and got.dtype == F64
        assert got.item() == pytest.approx(reference(name, s, t, y, **hyper), rel=1e-8, abs=1e-12)


def test_hand_computed_two_class_values():
    # s = [1, 0], t = [0, 1], y = 0. KD at T = 2: p_t = softmax([0, .5]), q = softmax([.5, 0]),
    # log(p1/p0) = log(q0/q1) = 0.5, so KL = (p1 - p0) * 0.5 with p1 = sigmoid(.5); times T^2 = 4.
    s = torch.tensor([[1.0, 0.0]], dtype=F64)
    t = torch.tensor([[0.0, 1.0]], dtype=F64)
    y = torch.tensor([0])
    sig = 1 / (1 + math.exp(-0.5))
    kd = 4 * (2 * sig - 1) * 0.5
    assert objectives.term("kd", s, t, y, temperature=2.0).item() == pytest.approx(kd, rel=1e-12)
    # DKD, two classes: b = p, so TCKD = the whole KL and NCKD = 0 (one non-target class).
    assert objectives.term("dkd", s, t, y, alpha=3.0, beta=5.0, temperature=2.0).item() == pytest.approx(3 * kd)
    # NKD, two classes: the non-target softmax is [1]: only -p^t_y log p^s_y = -sigmoid(-1) log sigmoid(1).
    nkd = -(1 / (1 + math.e)) * math.log(1 / (1 + math.exp(-1)))
    assert objectives.term("nkd", s, t, y, gamma=2.0, temperature=3.0).item() == pytest.approx(nkd, rel=1e-12)
    # logit_mse: centred s = [.5, -.5], t = [-.5, .5]: (1 + 1) / (2 * 2) = 0.5.
    assert objectives.term("logit_mse", s, t, y).item() == 0.5
    # LS-KD, two classes: unbiased std of [1, 0] is 1/sqrt(2), so Z = [.5, -.5] / (1e-7 + 1/sqrt 2) = +-r.
    r = 0.5 / (1e-7 + 2**-0.5)
    p1 = 1 / (1 + math.exp(-2 * r))  # teacher's probability of class 1 at T = 1
    ls = (2 * p1 - 1) * 2 * r
    assert objectives.term("ls_kd", s, t, y, temperature=1.0).item() == pytest.approx(ls, rel=1e-12)
    # DIST, one example: the intra-class columns are single numbers, centred to 0, so rho = 0 and
    # that part is 1; the inter-class rows are anti-correlated (rho = -1 up to the eps): 1 - (-1) = 2.
    d = objectives.term("dist", s, t, y, beta=1.0, gamma=1.0, temperature=1.0).item()
    assert d == pytest.approx(2 + 1, rel=1e-7)


def test_kd_and_logit_mse_equal_the_engine_losses_bit_for_bit():
    for shape, classes in [((16,), 10), ((3, 8), 2), ((2, 3, 5), 7)]:
        s, t, y = data(7, shape, classes)
        assert torch.equal(objectives.term("logit_mse", s, t, y), losses.centred_logit_mse(s, t))
        assert torch.equal(objectives.term("logit_mse", s, t, y), losses.logit_mse_loss(s, t, y, alpha=1.0))
        for temp in (1.0, 2.5, 4.0):
            assert torch.equal(objectives.term("kd", s, t, y, temperature=temp), losses.soft_kl(s, t, temp))


def test_kd_tends_to_logit_mse_at_high_temperature():
    s, t, y = data(3, (16,), 10)
    mse = objectives.term("logit_mse", s, t, y).item()
    assert objectives.term("kd", s, t, y, temperature=1e4).item() == pytest.approx(mse, rel=1e-4)
    assert abs(objectives.term("kd", s, t, y, temperature=1.0).item() - mse) > 1e-2 * mse


# ---------- identities ----------

@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("classes", [2, 10])
def test_kd_is_tckd_plus_weighted_nckd_per_example(temperature, classes):
    """DKD paper, section 3.1: KD = TCKD + (1 - p^T_t) NCKD, per example, with p^T_t the
    teacher's probability of the target class at temperature T (all three times T^2 here)."""
    s, t, y = data(11, (9,), classes)
    # Each example as its own stacked model of batch one gives per-example values.
    s1, t1, y1 = s.unsqueeze(1), t.unsqueeze(1), y.unsqueeze(1)
    kd = objectives.term("kd", s1, t1, y1, temperature=temperature)
    tckd = objectives.term("dkd", s1, t1, y1, alpha=1.0, beta=0.0, temperature=temperature)
    nckd = objectives.term("dkd", s1, t1, y1, alpha=0.0, beta=1.0, temperature=temperature)
    p_target = torch.softmax(t / temperature, dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
    assert kd.shape == (9,)
    torch.testing.assert_close(kd, tckd + (1 - p_target) * nckd, rtol=1e-12, atol=0)
    assert (nckd > 0).all() if classes > 2 else (nckd == 0).all()


def test_ls_kd_is_invariant_to_per_example_affine_maps_of_both_logit_sets():
    s, t, y = data(5, (12,), 10)
    g = torch.Generator().manual_seed(6)
    a, c = [torch.rand(12, 1, generator=g, dtype=F64) * 20 + 0.05 for _ in range(2)]
    b, d = [torch.randn(12, 1, generator=g, dtype=F64) * 50 for _ in range(2)]
    base = objectives.term("ls_kd", s, t, y, temperature=2.0)
    moved = objectives.term("ls_kd", a * s + b, c * t + d, y, temperature=2.0)
    # Exact but for the 1e-7 added to the std (relative effect ~1e-7 / std).
    torch.testing.assert_close(moved, base, rtol=1e-6, atol=0)
    # Plain KD is not invariant (so the assertion above can fail).
    assert not torch.allclose(objectives.term("kd", a * s + b, c * t + d, y, temperature=2.0),
                              objectives.term("kd", s, t, y, temperature=2.0), rtol=1e-3)


def test_ls_kd_with_two_classes_sees_only_the_ranking():
    s, t, y = data(20, (64,), 2)
    same = (s[:, 1] > s[:, 0]) == (t[:, 1] > t[:, 0])
    s1, t1, y1 = s.unsqueeze(1), t.unsqueeze(1), y.unsqueeze(1)
    per_example = objectives.term("ls_kd", s1, t1, y1, temperature=2.0)
    assert same.any() and (~same).any()
    assert (per_example[same].abs() < 1e-9).all()  # 0 but for the eps: (1e-7 / |s_1 - s_0|)^2
    torch.testing.assert_close(per_example[~same], per_example[~same][:1].expand((~same).sum()), rtol=1e-6, atol=0)
    assert objectives.grad("ls_kd", s1, t1, y1, temperature=2.0).abs().max() < 1e-5


@pytest.mark.parametrize("classes", [2, 10])
def test_identical_inputs(classes):
    s, _, y = data(8, (7,), classes)
    for name in ("kd", "logit_mse", "dkd", "ls_kd"):
        for h in HYPERS[name]:
            assert objectives.term(name, s, s.clone(), y, **h).item() == 0.0, name
    # DIST: rho(a, a) = |a~|^2 / (|a~|^2 + eps), so a small positive remainder, not 0.
    beta, gamma, temp = 2.0, 0.5, 4.0
    p = torch.softmax(s / temp, dim=-1)
    rows, cols = p - p.mean(-1, keepdim=True), p - p.mean(0, keepdim=True)
    sq_r, sq_c = (rows**2).sum(-1), (cols**2).sum(0)
    expected = temp**2 * (beta * (1e-8 / (sq_r + 1e-8)).mean() + gamma * (1e-8 / (sq_c + 1e-8)).mean())
    dist = objectives.term("dist", s, s.clone(), y, beta=beta, gamma=gamma, temperature=temp)
    assert 0 < dist.item() < 1e-2  # small, but not 0: rows near uniform have a small |a~|
    assert dist.item() == pytest.approx(expected.item(), rel=1e-5)
    # NKD is a cross-entropy: target term -p_y log p_y plus gamma T^2 times the entropy of the
    # non-target softmax (0 for two classes).
    gamma, temp = 1.5, 2.0
    p_y = torch.softmax(s, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
    q = torch.softmax((s / temp).masked_fill(torch.nn.functional.one_hot(y, classes).bool(), -math.inf), -1)
    entropy = -torch.special.xlogy(q, q).sum(-1)
    expected = (-p_y * p_y.log()).mean() + gamma * temp**2 * entropy.mean()
    nkd = objectives.term("nkd", s, s.clone(), y, gamma=gamma, temperature=temp)
    assert nkd.item() == pytest.approx(expected.item(), rel=1e-12)
    assert (entropy == 0).all() if classes == 2 else nkd.item() > (-p_y * p_y.log()).mean().item() + 1e-3


@pytest.mark.parametrize("name,hyper", CASES, ids=CASE_IDS)
def test_stacked_equals_loop_over_models(name, hyper):
    s, t, y = data(9, (2, 2, 8), 10)
    _, t_shared, y_shared = data(10, (8,), 10)
    for teacher, labels in [(t, y), (t_shared, y_shared), (t, y_shared)]:
        got = objectives.term(name, s, teacher, labels, **hyper)
        assert got.shape == (2, 2)
        for i in range(2):
            for j in range(2):
                ti = teacher[i, j] if teacher.ndim == 4 else teacher
                yi = labels[i, j] if labels.ndim == 3 else labels
                alone = objectives.term(name, s[i, j], ti, yi, **hyper)
                torch.testing.assert_close(got[i, j], alone, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name,hyper", CASES, ids=CASE_IDS)
def test_training_loss_is_continuous_as_alpha_goes_to_zero(name, hyper):
    s, t, y = data(12, (3, 16), 10)
    ce = losses.cross_entropy(s, y)
    soft = objectives.term(name, s, t, y, **hyper)
    assert torch.isfinite(soft).all()

    def loss(alpha):
        return (1 - alpha) * ce + alpha * soft

    assert torch.equal(loss(0.0), ce)
    for alpha in (1e-2, 1e-5, 1e-8):
        gap = (loss(alpha) - ce).abs()
        assert (gap <= alpha * (soft - ce).abs() * (1 + 1e-9) + 1e-15).all()
    assert ((loss(1e-8) - ce).abs() < 1e-6).all()


# ---------- stability ----------

@pytest.mark.parametrize("name,hyper", CASES, ids=CASE_IDS)
def test_finite_at_large_logits_in_float32(name, hyper):
    for classes in (2, 10):
        s, t, y = data(13, (4, 32), classes, scale=1e4, dtype=torch.float32)
        value = objectives.term(name, s, t, y, **hyper)
        g = objectives.grad(name, s, t, y, **hyper)
        assert value.dtype == torch.float32 and g.dtype == torch.float32
        assert torch.isfinite(value).all() and torch.isfinite(g).all(), (name, classes)
        if name != "dist":  # DIST's correlations of saturated probabilities are ill-conditioned
            exact = objectives.term(name, s.double(), t.double(), y, **hyper)
            torch.testing.assert_close(value.double(), exact, rtol=1e-3, atol=1e-3)


def test_reference_style_dkd_is_not_finite_where_ours_is():
    """What the stable computation buys: torch.log of summed float32 probabilities fails."""
    s, t, y = data(14, (32,), 10, scale=1e4, dtype=torch.float32)
    mask = torch.nn.functional.one_hot(y, 10).bool()
    p_s, p_t = torch.softmax(s, -1), torch.softmax(t, -1)
    b_s = torch.stack([p_s[mask], (p_s * ~mask).sum(-1)], -1)
    b_t = torch.stack([p_t[mask], (p_t * ~mask).sum(-1)], -1)
    naive = torch.nn.functional.kl_div(torch.log(b_s), b_t, reduction="sum") / 32
    assert not torch.isfinite(naive)
    assert torch.isfinite(objectives.term("dkd", s, t, y, alpha=1.0, beta=0.0, temperature=1.0))


# ---------- gradients ----------

@pytest.mark.parametrize("name,hyper", CASES, ids=CASE_IDS)
def test_grad_equals_autograd(name, hyper):
    for shape, classes, shared in [((16,), 10, False), ((7,), 2, False), ((3, 5), 10, True), ((2, 2, 4), 3, False)]:
        s, t, y = data(15, shape, classes)
        if shared:
            t, y = t[0], y[0]
        leaf = s.clone().requires_grad_(True)
        expected, = torch.autograd.grad(objectives.term(name, leaf, t, y, **hyper).sum(), leaf)
        got = objectives.grad(name, s, t, y, **hyper)
        assert got.shape == s.shape and not got.requires_grad
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name,hyper", CASES, ids=CASE_IDS)
def test_grad_matches_finite_differences(name, hyper):
    s, t, y = data(16, (2, 5), 4, scale=1.5)
    g = objectives.grad(name, s, t, y, **hyper)
    eps = 1e-6
    for idx in [(0, 0, 0), (0, 3, 2), (1, 1, 1), (1, 4, 3)]:
        plus, minus = s.clone(), s.clone()
        plus[idx] += eps
        minus[idx] -= eps
        fd = (objectives.term(name, plus, t, y, **hyper).sum() - objectives.term(name, minus, t, y, **hyper).sum())
        assert g[idx].item() == pytest.approx(fd.item() / (2 * eps), rel=1e-6, abs=1e-9), idx


def test_grad_works_under_no_grad_and_leaves_inputs_alone():
    s, t, y = data(17, (8,), 5)
    t.requires_grad_(True)
    with torch.no_grad():
        g = objectives.grad("nkd", s, t, y, gamma=1.5, temperature=2.0)
    assert torch.isfinite(g).all() and t.grad is None and not s.requires_grad


# ---------- errors ----------

@pytest.mark.parametrize("name,hyper,match", [
    ("kdd", {"temperature": 1.0}, "unknown distillation objective 'kdd'"),
    ("dkd", {"alpha": 1.0, "temperature": 4.0}, "objective 'dkd': missing hyper-parameter.*beta"),
    ("kd", {"temperature": 2.0, "alpha": 0.5}, "objective 'kd': unknown hyper-parameter.*alpha"),
    ("logit_mse", {"temperature": 2.0}, "objective 'logit_mse': unknown hyper-parameter.*temperature"),
    ("kd", {"temperature": 0.0}, "objective 'kd': temperature must be > 0"),
    ("ls_kd", {"temperature": -1.0}, "objective 'ls_kd': temperature must be > 0"),
    ("nkd", {"gamma": float("nan"), "temperature": 1.0}, "objective 'nkd': gamma must be a finite"),
    ("dist", {"beta": -1.0, "gamma": 1.0, "temperature": 1.0}, "objective 'dist': beta must be >= 0"),
    ("kd", {"temperature": "4"}, "objective 'kd': temperature must be a finite real"),
    ("kd", {"temperature": True}, "objective 'kd': temperature must be a finite real"),
])
def test_invalid_name_or_hyper_parameters(name, hyper, match):
    s, t, y = data(18, (4,), 3)
    with pytest.raises(ValueError, match=match):
        objectives.term(name, s, t, y, **hyper)
    with pytest.raises(ValueError, match=match):
        objectives.grad(name, s, t, y, **hyper)


def test_invalid_shapes():
    s, t, y = data(19, (2, 4), 3)
    with pytest.raises(ValueError, match="objective 'kd': teacher logits"):
        objectives.term("kd", s, t[..., :2], y, temperature=1.0)
    with pytest.raises(ValueError, match="objective 'kd': labels"):
        objectives.term("kd", s, t, y.double(), temperature=1.0)
    with pytest.raises(ValueError, match="objective 'kd': teacher logits .* or labels"):
        objectives.term("kd", s, t, torch.zeros(3, 4, dtype=torch.long), temperature=1.0)
    with pytest.raises(ValueError, match="at least 2 classes"):
        objectives.term("ls_kd", s[..., :1], t[..., :1], y * 0, temperature=1.0)
