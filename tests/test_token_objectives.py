"""distillstudy.token_objectives (re-exported as objectives.token_term): golden values against
re-statements of the authors' code, identities, masking, gradients and errors.

The `trl_*` and `distillm_*` functions re-state the references line by line, in float64:
  trl_generalized_jsd   huggingface/trl trl/experimental/gkd/gkd_trainer.py (f2cd577),
                        GKDTrainer.generalized_jsd_loss, reduction "batchmean" with labels
  distillm_*            jongwooko/distillm distillm/losses.py (d47e77f)
Both mark ignored positions with label -100; here they come from the same mask.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from distillstudy import objectives, token_objectives
from distillstudy.token_objectives import TOKEN_OBJECTIVES, token_term

F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)


def logits(seed, batch=3, length=5, vocab=7, scale=3.0, dtype=F64):
    """Student and teacher logits (batch, length, vocab) and a mask with some positions off."""
    g = torch.Generator().manual_seed(seed)
    s = scale * torch.randn(batch, length, vocab, generator=g, dtype=dtype)
    t = scale * torch.randn(batch, length, vocab, generator=g, dtype=dtype)
    mask = torch.rand(batch, length, generator=g) < 0.7
    mask[0, 0] = True
    return s, t, mask


def labels_of(mask):
    """What the references read: -100 at positions that do not count."""
    return torch.where(mask, torch.zeros_like(mask, dtype=torch.long), torch.full_like(mask, -100, dtype=torch.long))


# ---- the references, re-stated ------------------------------------------------------------

def trl_generalized_jsd(student_logits, teacher_logits, labels, beta, temperature):
    student_logits = student_logits / temperature
    teacher_logits = teacher_logits / temperature
    student_log_probs = F.log_softmax(student_logits, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits, dim=-1)
    if beta == 0:
        jsd = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True)
    elif beta == 1:
        jsd = F.kl_div(teacher_log_probs, student_log_probs, reduction="none", log_target=True)
    else:
        beta = torch.tensor(beta, dtype=student_log_probs.dtype)
        mixture_log_probs = torch.logsumexp(
            torch.stack([student_log_probs + torch.log1p(-beta), teacher_log_probs + torch.log(beta)]), dim=0)
        kl_teacher = F.kl_div(mixture_log_probs, teacher_log_probs, reduction="none", log_target=True)
        kl_student = F.kl_div(mixture_log_probs, student_log_probs, reduction="none", log_target=True)
        jsd = beta * kl_teacher + (1 - beta) * kl_student
    mask = labels != -100
    jsd = jsd[mask]
    return jsd.sum() / mask.sum().clamp_min(1)


def _masked_mean(x, labels):
    mask = (labels != -100).int()
    return torch.sum(x.view(-1) * mask.view(-1), dim=0) / torch.sum(mask.view(-1), dim=0)


def distillm_forward_kl(logits, teacher_logits, labels):
    teacher_probs = F.softmax(teacher_logits, dim=-1)
    inf_mask = torch.isinf(logits)
    student_logprobs = F.log_softmax(logits, dim=-1)
    prod_probs = torch.masked_fill(teacher_probs * student_logprobs, inf_mask, 0)
    return -_masked_mean(torch.sum(prod_probs, dim=-1), labels)


def distillm_reverse_kl(logits, teacher_logits, labels):
    student_probs = F.softmax(logits, dim=-1)
    student_logprobs = F.log_softmax(logits, dim=-1)
    teacher_logprobs = F.log_softmax(teacher_logits, dim=-1)
    inf_mask = torch.isinf(teacher_logits) | torch.isinf(logits)
    prod_probs = torch.masked_fill(student_probs * teacher_logprobs, inf_mask, 0)
    prod_probs -= torch.masked_fill(student_probs * student_logprobs, inf_mask, 0)
    return -_masked_mean(torch.sum(prod_probs, dim=-1), labels)


def distillm_tv_distance(logits, teacher_logits, labels):
    teacher_probs = F.softmax(teacher_logits, dim=-1)
    student_probs = F.softmax(logits, dim=-1)
    inf_mask = torch.isinf(logits) | torch.isinf(teacher_logits)
    prod_probs = 0.5 * torch.masked_fill(torch.abs(teacher_probs - student_probs), inf_mask, 0)
    return _masked_mean(torch.sum(prod_probs, dim=-1), labels)


def distillm_skewed_forward_kl(logits, teacher_logits, labels, lam):
    teacher_probs = F.softmax(teacher_logits, dim=-1)
    student_probs = F.softmax(logits, dim=-1)
    mixed_logprobs = torch.log(lam * teacher_probs + (1 - lam) * student_probs)
    inf_mask = torch.isinf(logits) | torch.isinf(teacher_logits)
    prod_probs = torch.masked_fill(teacher_probs * mixed_logprobs, inf_mask, 0)
    return -_masked_mean(torch.sum(prod_probs, dim=-1), labels)


def distillm_skewed_reverse_kl(logits, teacher_logits, labels, lam):
    teacher_probs = F.softmax(teacher_logits, dim=-1)
    student_probs = F.softmax(logits, dim=-1)
    student_logprobs = F.log_softmax(logits, dim=-1)
    mixed_logprobs = torch.log((1 - lam) * teacher_probs + lam * student_probs)
    inf_mask = torch.isinf(logits) | torch.isinf(teacher_logits)
    prod_probs = torch.masked_fill(student_probs * mixed_logprobs, inf_mask, 0)
    prod_probs -= torch.masked_fill(student_probs * student_logprobs, inf_mask, 0)
    return -_masked_mean(torch.sum(prod_probs, dim=-1), labels)


def teacher_entropy(teacher_logits, labels):
    """Mean over counted positions of H(p_T): the constant DistiLLM's cross-entropies add."""
    log_p = F.log_softmax(teacher_logits, dim=-1)
    return _masked_mean(-(log_p.exp() * log_p).sum(dim=-1), labels)


# (name, hyper, reference(s, t, labels) giving the same value as token_term)
GOLDEN = [
    ("fkl", {}, lambda s, t, y: trl_generalized_jsd(s, t, y, beta=0.0, temperature=1.0)),
    ("fkl", {"temperature": 2.0}, lambda s, t, y: trl_generalized_jsd(s, t, y, beta=0.0, temperature=2.0)),
    ("fkl", {}, lambda s, t, y: distillm_forward_kl(s, t, y) - teacher_entropy(t, y)),
    ("rkl", {}, lambda s, t, y: trl_generalized_jsd(s, t, y, beta=1.0, temperature=1.0)),
    ("rkl", {"temperature": 0.5}, lambda s, t, y: trl_generalized_jsd(s, t, y, beta=1.0, temperature=0.5)),
    ("rkl", {}, distillm_reverse_kl),
    ("jsd", {}, lambda s, t, y: trl_generalized_jsd(s, t, y, beta=0.5, temperature=1.0)),
    ("jsd", {"beta": 0.1, "temperature": 2.0}, lambda s, t, y: trl_generalized_jsd(s, t, y, 0.1, 2.0)),
    ("jsd", {"beta": 0.9}, lambda s, t, y: trl_generalized_jsd(s, t, y, 0.9, 1.0)),
    ("jsd", {"beta": 0.0, "temperature": 3.0}, lambda s, t, y: trl_generalized_jsd(s, t, y, 0.0, 3.0)),
    ("jsd", {"beta": 1.0}, lambda s, t, y: trl_generalized_jsd(s, t, y, 1.0, 1.0)),
    ("tvd", {}, distillm_tv_distance),
    ("skl", {}, lambda s, t, y: distillm_skewed_forward_kl(s, t, y, 0.1) - teacher_entropy(t, y)),
    ("skl", {"lam": 0.5}, lambda s, t, y: distillm_skewed_forward_kl(s, t, y, 0.5) - teacher_entropy(t, y)),
    ("srkl", {}, lambda s, t, y: distillm_skewed_reverse_kl(s, t, y, 0.1)),
    ("srkl", {"lam": 0.7}, lambda s, t, y: distillm_skewed_reverse_kl(s, t, y, 0.7)),
]
GOLDEN_IDS = [f"{n}-" + "-".join(f"{k}{v:g}" for k, v in h.items()) + f"-{i}" for i, (n, h, _) in enumerate(GOLDEN)]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("name", "hyper", "reference"), GOLDEN, ids=GOLDEN_IDS)
def test_equals_the_reference(name, hyper, reference, seed):
    s, t, mask = logits(seed)
    expected = reference(s, t, labels_of(mask))
    got = token_term(name, s, t, mask, **hyper)
    assert got.shape == () and got.dtype == F64
    torch.testing.assert_close(got, expected, **TOL)
    assert got > 0


@pytest.mark.parametrize(("name", "reference"), [
    ("fkl", distillm_forward_kl),
    ("skl", lambda s, t, y: distillm_skewed_forward_kl(s, t, y, 0.1)),
])
def test_distillm_cross_entropies_differ_by_a_constant_in_the_student(name, reference):
    """DistiLLM's forward and skew-forward losses are cross-entropies: same gradient in s."""
    s, t, mask = logits(3)
    s1, s2 = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    ours = token_term(name, s1, t, mask)
    theirs = reference(s2, t, labels_of(mask))
    (g_ours,), (g_theirs,) = torch.autograd.grad(ours, s1), torch.autograd.grad(theirs, s2)
    torch.testing.assert_close(g_ours, g_theirs, **TOL)
    assert theirs - ours > 0.1  # the teacher's entropy, not a rounding difference


def test_objectives_re_exports_the_contract():
    assert objectives.token_term is token_objectives.token_term
    assert objectives.TOKEN_OBJECTIVES is TOKEN_OBJECTIVES
    assert set(TOKEN_OBJECTIVES) == {"fkl", "rkl", "jsd", "tvd", "skl", "srkl"}
    assert dict(TOKEN_OBJECTIVES["jsd"]) == {"beta": 0.5, "temperature": 1.0}


# ---- identities -----------------------------------------------------------------------------

ALL_SETTINGS = [("fkl", {}), ("fkl", {"temperature": 4.0}), ("rkl", {"temperature": 2.0}), ("jsd", {}),
                ("jsd", {"beta": 0.2, "temperature": 2.0}), ("tvd", {}), ("skl", {"lam": 0.3}), ("srkl", {})]


@pytest.mark.parametrize(("name", "hyper"), ALL_SETTINGS)
def test_zero_for_identical_inputs_and_positive_otherwise(name, hyper):
    s, t, mask = logits(4)
    assert abs(token_term(name, s, s.clone(), mask, **hyper).item()) < 1e-14
    assert token_term(name, s, t, mask, **hyper) > 1e-3
    shifted = s + torch.randn(s.shape[:2] + (1,), dtype=F64)  # softmax is shift invariant per position
    assert abs(token_term(name, s, shifted, mask, **hyper).item()) < 1e-13


def test_jsd_is_symmetric_at_one_half_and_not_elsewhere():
    s, t, mask = logits(5)
    torch.testing.assert_close(token_term("jsd", s, t, mask, beta=0.5), token_term("jsd", t, s, mask, beta=0.5),
                               **TOL)
    assert abs(token_term("jsd", s, t, mask, beta=0.2) - token_term("jsd", t, s, mask, beta=0.2)) > 1e-4
    # swapping the roles is the same as swapping beta
    torch.testing.assert_close(token_term("jsd", s, t, mask, beta=0.2), token_term("jsd", t, s, mask, beta=0.8),
                               **TOL)


def test_jsd_ends_are_the_two_kls_exactly_and_in_the_scaled_limit():
    """trl: beta = 0 is KL(p_T || p_S) and beta = 1 is KL(p_S || p_T); the mixture formula
    tends to 0 at both ends, divided by beta (1 - beta) it tends to the same KLs."""
    s, t, mask = logits(6)
    for temp in (1.0, 2.5):
        fkl, rkl = token_term("fkl", s, t, mask, temperature=temp), token_term("rkl", s, t, mask, temperature=temp)
        assert torch.equal(token_term("jsd", s, t, mask, beta=0.0, temperature=temp), fkl)
        assert torch.equal(token_term("jsd", s, t, mask, beta=1.0, temperature=temp), rkl)
        eps = 1e-8  # the relative error is O(eps) (4e-6 here at T = 1), rounding O(1e-16 / eps)
        torch.testing.assert_close(token_term("jsd", s, t, mask, beta=eps, temperature=temp) / eps, fkl, rtol=1e-5,
                                   atol=0)
        torch.testing.assert_close(token_term("jsd", s, t, mask, beta=1 - eps, temperature=temp) / eps, rkl,
                                   rtol=1e-5, atol=0)
    assert abs(fkl - rkl) > 1e-3  # the two ends differ: the test could tell them apart


def test_skew_kls_tend_to_the_kls_as_lambda_goes_to_zero():
    s, t, mask = logits(7)
    fkl, rkl = token_term("fkl", s, t, mask), token_term("rkl", s, t, mask)
    assert torch.equal(token_term("skl", s, t, mask, lam=0.0), fkl)
    assert torch.equal(token_term("srkl", s, t, mask, lam=0.0), rkl)
    torch.testing.assert_close(token_term("skl", s, t, mask, lam=1e-9), fkl, rtol=1e-6, atol=0)
    torch.testing.assert_close(token_term("srkl", s, t, mask, lam=1e-9), rkl, rtol=1e-6, atol=0)
    assert token_term("skl", s, t, mask, lam=1.0) == 0 and token_term("srkl", s, t, mask, lam=1.0) == 0
    values = [token_term("skl", s, t, mask, lam=lam).item() for lam in (0.0, 0.1, 0.5, 0.9)]
    assert values == sorted(values, reverse=True)  # more skew, smaller divergence
    for lam in (0.1, 0.5):  # KL(p || lam p + ...) <= log(1 / lam)
        assert token_term("skl", 30 * s, 30 * t, mask, lam=lam) <= math.log(1 / lam)


def test_total_variation_lies_in_zero_one():
    s, t, mask = logits(8, scale=50.0)
    value = token_term("tvd", s, t, mask)
    assert 0 < value <= 1
    peaked_s = torch.full((1, 1, 4), -1e4, dtype=F64)
    peaked_t = peaked_s.clone()
    peaked_s[..., 0], peaked_t[..., 1] = 0.0, 0.0
    one = torch.ones(1, 1, dtype=torch.bool)
    assert token_term("tvd", peaked_s, peaked_t, one).item() == pytest.approx(1.0, abs=1e-12)


# ---- masks, gradients, stability ---------------------------------------------------------------

@pytest.mark.parametrize(("name", "hyper"), ALL_SETTINGS)
def test_masked_positions_change_neither_value_nor_gradient(name, hyper):
    s, t, mask = logits(9)
    value = token_term(name, s, t, mask, **hyper)
    s2, t2 = s.clone(), t.clone()
    s2[~mask], t2[~mask] = float("nan"), 1e6
    s2.requires_grad_(True)
    assert torch.equal(token_term(name, s2, t2, mask, **hyper), value)
    (g,) = torch.autograd.grad(token_term(name, s2, t2, mask, **hyper), s2)
    assert torch.all(g[~mask] == 0) and torch.isfinite(g).all() and g[mask].abs().sum() > 0
    # the mean is over counted positions, not over sequences
    per_position = [token_term(name, s[b : b + 1, i : i + 1], t[b : b + 1, i : i + 1],
                               torch.ones(1, 1, dtype=torch.bool), **hyper) for b, i in mask.nonzero().tolist()]
    torch.testing.assert_close(value, torch.stack(per_position).mean(), **TOL)


@pytest.mark.parametrize(("name", "hyper"), ALL_SETTINGS + [("jsd", {"beta": 0.0}), ("skl", {"lam": 0.0})])
def test_gradients_match_finite_differences(name, hyper):
    s, t, mask = logits(10, batch=2, length=3, vocab=5, scale=1.5)
    s.requires_grad_(True)
    t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: token_term(name, a, b, mask, **hyper), (s, t))


@pytest.mark.parametrize(("name", "hyper"), ALL_SETTINGS)
def test_a_vocabulary_entry_masked_in_both_models_adds_nothing(name, hyper):
    """A padded vocabulary (-inf logits in both) gives the value of the vocabulary without
    it and finite gradients (trl's formula gives nan there)."""
    s, t, mask = logits(11)
    pad = torch.full(s.shape[:2] + (2,), -math.inf, dtype=F64)
    s_pad = torch.cat([s, pad], dim=-1).requires_grad_(True)
    t_pad = torch.cat([t, pad], dim=-1)
    value = token_term(name, s_pad, t_pad, mask, **hyper)
    torch.testing.assert_close(value, token_term(name, s, t, mask, **hyper), **TOL)
    (g,) = torch.autograd.grad(value, s_pad)
    assert torch.isfinite(g).all()


@pytest.mark.parametrize(("name", "hyper"), ALL_SETTINGS)
def test_float32_with_large_logits_stays_finite(name, hyper):
    s, t, mask = logits(12, scale=200.0, dtype=torch.float32)
    s.requires_grad_(True)
    value = token_term(name, s, t, mask, **hyper)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    (g,) = torch.autograd.grad(value, s)
    assert torch.isfinite(g).all()
    reference = token_term(name, s.detach().double(), t.double(), mask, **hyper)
    torch.testing.assert_close(value.double(), reference, rtol=1e-4, atol=1e-4)


# ---- bad input ---------------------------------------------------------------------------------

def test_unknown_names_and_hyper_parameters_are_named():
    s, t, mask = logits(13)
    with pytest.raises(ValueError, match=r"unknown token objective 'kd'.*fkl, rkl, jsd, tvd, skl, srkl"):
        token_term("kd", s, t, mask)
    with pytest.raises(ValueError, match=r"'tvd': unknown hyper-parameter\(s\) temperature \(it takes: none\)"):
        token_term("tvd", s, t, mask, temperature=2.0)
    with pytest.raises(ValueError, match=r"'skl': unknown hyper-parameter\(s\) beta \(it takes: lam\)"):
        token_term("skl", s, t, mask, beta=0.5)


@pytest.mark.parametrize(("name", "hyper", "message"), [
    ("jsd", {"beta": 1.5}, "beta must be in"),
    ("skl", {"lam": -0.1}, "lam must be in"),
    ("fkl", {"temperature": 0.0}, "temperature must be > 0"),
    ("rkl", {"temperature": float("nan")}, "finite real"),
    ("srkl", {"lam": True}, "finite real"),
    ("jsd", {"beta": "0.5"}, "finite real"),
])
def test_bad_hyper_parameter_values(name, hyper, message):
    s, t, mask = logits(14)
    with pytest.raises(ValueError, match=f"{name}.*{message}"):
        token_term(name, s, t, mask, **hyper)


def test_bad_shapes_and_masks():
    s, t, mask = logits(15)
    with pytest.raises(ValueError, match="counts no position"):
        token_term("fkl", s, t, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="mask must be bool"):
        token_term("fkl", s, t, mask.long())
    with pytest.raises(ValueError, match="mask must be bool"):
        token_term("fkl", s, t, mask[:, :-1])
    with pytest.raises(ValueError, match=r"do not match student logits"):
        token_term("fkl", s, t[..., :-1], mask)
    with pytest.raises(ValueError, match=r"\(batch, length, vocab\)"):
        token_term("fkl", s[0], t[0], mask[0])
    with pytest.raises(ValueError, match=r"\(batch, length, vocab\)"):
        token_term("fkl", s.long(), t, mask)
    with pytest.raises(ValueError, match="torch tensors"):
        token_term("fkl", s.numpy(), t, mask)
