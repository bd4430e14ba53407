import pytest
import torch
import torch.nn.functional as F

from rewind import models
from rewind.train.fisher import choose_examples, fisher_trace, sample_labels
from rewind.errors import UserError
from rewind.train.warmstart import fresh_bn_statistics, reset_layers, shrink_perturb


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed=0, num_classes=10):
    model = models.build("resnet8", width=4, num_classes=num_classes, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    for name, b in model.named_buffers():  # trained-looking running statistics, not the 0/1 defaults
        if name.endswith("running_mean"):
            b.copy_(0.1 * torch.randn(b.shape, generator=g))
        elif name.endswith("running_var"):
            b.copy_(0.5 + torch.rand(b.shape, generator=g))
    return model


def _images(n=10):
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(7))


def _direct_fisher(model, x, seed):
    """One backward per example, with the same sampled labels, in eval mode."""
    model.eval()
    y = sample_labels(model, x, seed)
    sums = {k: 0.0 for k, _ in model.named_parameters()}
    for i in range(len(x)):
        log_p = F.log_softmax(model(x[i:i + 1]), -1)[0, y[i]]
        grads = torch.autograd.grad(log_p, list(model.parameters()))
        for (k, _), g in zip(model.named_parameters(), grads):
            sums[k] += float(g.double().pow(2).sum())
    return {k: v / len(x) for k, v in sums.items()}


def test_fisher_trace_equals_a_per_example_loop():
    model, x = _model(), _images()
    model.train()
    fisher = fisher_trace(model, x, seed=3, chunk_size=4)
    assert model.training  # the mode is restored
    direct = _direct_fisher(model, x, seed=3)
    assert fisher.per_parameter.keys() == direct.keys()
    for k in direct:
        assert fisher.per_parameter[k] == pytest.approx(direct[k], rel=1e-4, abs=1e-12), k
    assert fisher.total == pytest.approx(sum(direct.values()), rel=1e-4)
    prunable = set(models.prunable(model))
    assert fisher.prunable_total == pytest.approx(sum(v for k, v in direct.items() if k in prunable), rel=1e-4)
    assert 0 < fisher.prunable_total < fisher.total and fisher.n_examples == 10


def test_fisher_trace_is_reproducible_under_its_seed_and_subsets_examples():
    model, x = _model(), _images()
    a = fisher_trace(model, x, n_examples=6, seed=1, chunk_size=4)
    b = fisher_trace(model, x, n_examples=6, seed=1, chunk_size=64)
    assert a.n_examples == 6 and a.total > 0
    assert a.total == pytest.approx(b.total, rel=1e-6)  # the chunk size changes nothing but rounding
    assert fisher_trace(model, x, n_examples=6, seed=1, chunk_size=4) == a
    assert fisher_trace(model, x, n_examples=6, seed=2).total != a.total
    chosen = choose_examples(10, 6, seed=1)
    assert len(set(chosen.tolist())) == 6
    direct = _direct_fisher(model, x[chosen], seed=1)
    assert a.total == pytest.approx(sum(direct.values()), rel=1e-4)
    masked = fisher_trace(model, x, seed=1, masks={"fc.weight": torch.zeros(10, 16, dtype=torch.bool)})
    assert masked.per_parameter["fc.weight"] == 0.0


def test_shrink_perturb_endpoints_and_formula():
    model, fresh = _model(0), _model(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shrink_perturb(model, fresh, lam=1.0, sigma=0.0)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    shrink_perturb(model, fresh, lam=0.0, sigma=1.0)
    params = dict(model.named_parameters())
    assert all(torch.equal(params[k], p) for k, p in fresh.named_parameters())
    buffers = dict(model.named_buffers())
    assert all(torch.equal(b, before[k]) for k, b in buffers.items())  # running statistics kept
    model.load_state_dict(before)
    shrink_perturb(model, fresh, lam=0.6, sigma=0.01)
    for k, p in fresh.named_parameters():
        assert torch.allclose(params[k], 0.6 * before[k] + 0.01 * p)


def test_reset_layers_copies_exactly_the_chosen_layers():
    model, fresh = _model(0), _model(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fc = model.fc.weight
    copied = reset_layers(model, fresh, ["blocks.2", "fc"])
    assert model.fc.weight is fc  # in place: an optimizer's references stay valid
    assert set(copied) == {k for k in before if k.startswith(("blocks.2.", "fc."))}
    assert any(k.endswith("running_var") for k in copied)
    fresh_state = fresh.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, fresh_state[k] if k in copied else before[k]), k
    with pytest.raises(UserError, match="no layer 'blocks.9'"):
        reset_layers(model, fresh, ["blocks.9"])
    with pytest.raises(UserError, match="does not match"):
        reset_layers(model, _model(1, num_classes=4), ["fc"])


def test_fresh_bn_statistics_copies_exactly_the_fresh_buffers():
    """Ash & Adams's warm start: the trained parameters, with a fresh network's running statistics."""
    model, fresh = _model(0), _model(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fresh.bn.num_batches_tracked.fill_(7)
    copied = fresh_bn_statistics(model, fresh)
    buffers = {k for k, _ in model.named_buffers()}
    assert set(copied) == buffers and any(k.endswith("num_batches_tracked") for k in copied)
    fresh_state = fresh.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, fresh_state[k] if k in buffers else before[k]), k

