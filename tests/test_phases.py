import re

import pytest
import torch

from rewind import data as D
from rewind.data import phases as P
from rewind.errors import UserError

MEAN, STD = D.SPECS["cifar10"].mean, D.SPECS["cifar10"].std

N, BATCH = 300, 64  # 5 iterations per epoch, the last one short


pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n=N, seed=0):
    """Random images whose centre pixel encodes the example index (a crop shifts by at most 4)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    x[:, 0, 10:22, 10:22] = (torch.arange(n) % 256).view(-1, 1, 1).to(torch.uint8)
    x[:, 1, 10:22, 10:22] = (torch.arange(n) // 256).view(-1, 1, 1).to(torch.uint8)
    return x, torch.randint(0, 10, (n,), generator=g)


def _loader(n=N, seed=0, augment=True, order_seed=0):
    x, y = _data(n, seed)
    return D.DeviceLoader(x, y, batch_size=BATCH, order_seed=order_seed, aug_seed=0,
                          augmentation="crop+flip" if augment else "none", mean=MEAN, std=STD)


def _schedule(*texts, num_classes=10):
    return P.PhaseSchedule(P.parse_list(list(texts), iterations_per_epoch=5), num_classes)


def _pixels(x):
    """Invert the normalisation: back to 0..255 pixel values."""
    std, mean = torch.tensor(STD).view(1, -1, 1, 1), torch.tensor(MEAN).view(1, -1, 1, 1)
    return (x * std + mean) * 255.0


def _example_ids(x):
    p = _pixels(x)[:, :, 16, 16].round().long()
    return p[:, 0] + 256 * p[:, 1]


def _high_frequency_energy(x, cutoff=4):
    spec = torch.fft.fft2(x - x.mean(dim=(-2, -1), keepdim=True)).abs() ** 2
    f = torch.fft.fftfreq(x.shape[-1]) * x.shape[-1]
    high = (f.abs()[:, None] > cutoff) | (f.abs()[None, :] > cutoff)
    return spec[..., high].sum()


def test_no_phase_gives_the_plain_batch_bit_for_bit():
    loader, schedule = _loader(), P.PhaseSchedule([])
    for it in (0, 4, 7):
        x, y = schedule.batch(loader, it)
        xp, yp = loader.batch(it)
        assert torch.equal(x, xp) and torch.equal(y, yp)
    assert schedule.weight_decay_factor(3) == 1.0


def test_blur_keeps_shape_removes_high_frequencies_and_keeps_constants():
    x = torch.randint(0, 256, (8, 3, 32, 32), generator=torch.Generator().manual_seed(1)).float()
    b = P.blur(x, 8)
    assert b.shape == x.shape
    assert _high_frequency_energy(b) < 0.02 * _high_frequency_energy(x)
    assert abs(b.mean() - x.mean()) < 1.0  # the average colour is kept
    const = torch.full((2, 3, 32, 32), 137.0)
    assert torch.allclose(P.blur(const, 8), const, atol=1e-4)
    # Through the schedule: the blurred crop of the same example, normalised as usual.
    loader = _loader()
    xb, yb = _schedule("blur").batch(loader, 2)
    raw, y, _ = loader.raw_batch(2)
    assert torch.equal(xb, loader.normalize(P.blur(raw.float(), 8))) and torch.equal(yb, y)


def test_label_permutation_is_a_bijection_applied_consistently():
    loader, schedule = _loader(), _schedule("label-permutation(seed=3)")
    new_label, pairs = {}, set()
    for it in range(10):  # two epochs, each example seen twice in different batches
        _, y = schedule.batch(loader, it)
        _, true, idx = loader.raw_batch(it)
        for i, t, n in zip(idx.tolist(), true.tolist(), y.tolist()):
            assert new_label.setdefault(i, n) == n
            pairs.add((t, n))
    mapping = dict(pairs)
    assert len(mapping) == len(pairs) == 10  # a function of the true label...
    assert sorted(mapping.values()) == list(range(10))  # ...that is a permutation
    assert mapping != {c: c for c in range(10)}


def test_random_labels_are_fixed_per_example_and_mostly_wrong():
    loader, schedule = _loader(), _schedule("random-labels(seed=1)")
    label = {}
    for it in range(15):  # three epochs
        _, y = schedule.batch(loader, it)
        for i, n in zip(loader.indices(it).tolist(), y.tolist()):
            assert label.setdefault(i, n) == n
    assert len(label) == N
    wrong = sum(label[i] != int(loader.labels[i]) for i in range(N)) / N
    assert 0.83 < wrong < 0.97  # 90% expected with 10 classes
    # Another order seed: the same labels per example (keyed by example, not position).
    other = _loader(order_seed=5)
    _, y = _schedule("random-labels(seed=1)").batch(other, 1)
    assert [label[i] for i in other.indices(1).tolist()] == y.tolist()
    _, y2 = _schedule("random-labels(seed=2)").batch(loader, 0)
    assert not torch.equal(y2, schedule.batch(loader, 0)[1])


def test_vertical_flip_flips_rows_exactly():
    loader = _loader()
    x, y = _schedule("vertical-flip").batch(loader, 3)
    plain, yp = loader.batch(3)
    assert torch.equal(x, plain.flip(-2)) and torch.equal(y, yp)
    assert torch.equal(x[:, :, 0], plain[:, :, 31])


def test_rotation_labels_are_exact_rot90_of_the_augmented_image():
    loader, schedule = _loader(), _schedule("rotation(seed=2)")
    assert P.num_outputs(schedule.phases, 10) == 4 and P.num_outputs([], 10) == 10
    seen, per_example = set(), {}
    for it in (0, 1, 6):
        x, r = schedule.batch(loader, it)
        raw, _, idx = loader.raw_batch(it)
        for k in range(len(r)):
            assert torch.equal(x[k], loader.normalize(torch.rot90(raw[k:k + 1], int(r[k]), dims=(-2, -1)))[0])
        seen |= set(r.tolist())
        if it < 5:
            per_example.update(zip(idx.tolist(), r.tolist()))
    assert seen == {0, 1, 2, 3}
    other = _loader(order_seed=9)  # keyed by (seed, epoch, example), not by batch position
    _, r = _schedule("rotation(seed=2)").batch(other, 0)
    assert [per_example.get(i, v) for i, v in zip(other.indices(0).tolist(), r.tolist())] == r.tolist()


def test_noise_images_carry_no_label_information():
    a, b = _loader(n=600, seed=0), _loader(n=600, seed=1)
    schedule = _schedule("noise(seed=4)")
    xa, ya = schedule.batch(a, 3)
    xb, yb = _schedule("noise(seed=4)").batch(b, 3)
    assert torch.equal(xa, xb) and not torch.equal(ya, yb)  # the same noise whatever the data
    assert torch.equal(ya, a.batch(3)[1])  # labels kept: the task is noise -> label
    assert abs(xa.mean()) < 0.02 and abs(xa.std() - 1) < 0.02  # N(0, 1) once normalised
    assert not torch.equal(xa, schedule.batch(a, 4)[0][:len(xa)])
    # Nearest class mean fit on one epoch of noise, tested on the next: chance accuracy.
    ipe = a.iterations_per_epoch
    train = [schedule.batch(a, it) for it in range(ipe)]
    xs, ys = torch.cat([x.flatten(1) for x, _ in train]), torch.cat([y for _, y in train])
    means = torch.stack([xs[ys == c].mean(0) for c in range(10)])
    test = [schedule.batch(a, it) for it in range(ipe, 2 * ipe)]
    correct = sum(int((torch.cdist(x.flatten(1), means).argmin(1) == y).sum()) for x, y in test)
    assert correct / 600 < 0.17  # chance is 0.1; the same classifier on real data would be near 1


def test_no_augmentation_gives_the_raw_images_in_the_same_order():
    loader, schedule = _loader(), _schedule("no-augmentation")
    images, labels = _data()
    for it in (0, 4, 8):
        x, y = schedule.batch(loader, it)
        idx = loader.indices(it)
        assert torch.equal(x, loader.normalize(images[idx])) and torch.equal(y, labels[idx])


def test_subset_batches_hold_only_subset_examples_each_once_per_epoch():
    loader, schedule = _loader(), _schedule("subset(fraction=0.5,seed=7):2it-")
    keep = schedule.subset_indices(schedule.phases[0], loader)
    assert len(keep) == 150 and len(set(keep.tolist())) == 150
    ids, labels = [], []
    for it in range(2, 5):  # 150 examples: 3 iterations per subset epoch, counted from the phase start
        x, y = schedule.batch(loader, it)
        ids += _example_ids(x).tolist()
        labels += y.tolist()
    assert sorted(ids) == keep.tolist()
    assert labels == [int(loader.labels[i]) for i in ids]
    smaller = _schedule("subset(fraction=0.25,seed=7)")
    assert set(smaller.subset_indices(smaller.phases[0], loader).tolist()) < set(keep.tolist())


def test_no_weight_decay_is_zero_exactly_inside_its_window():
    schedule = _schedule("no-weight-decay:1ep-2ep")
    assert [schedule.weight_decay_factor(t) for t in (0, 4, 5, 9, 10)] == [1.0, 1.0, 0.0, 0.0, 1.0]
    loader = _loader()
    assert torch.equal(schedule.batch(loader, 6)[0], loader.batch(6)[0])


@pytest.mark.parametrize("kind", ["blur", "label-permutation", "random-labels", "vertical-flip", "noise",
                                  "no-augmentation", "subset", "rotation"])
def test_phases_are_active_exactly_on_start_to_end(kind):
    loader, schedule = _loader(), _schedule(f"{kind}:1ep2it-2ep")  # iterations [7, 10)
    for it in (6, 10, 11):
        x, y = schedule.batch(loader, it)
        xp, yp = loader.batch(it)
        assert torch.equal(x, xp) and torch.equal(y, yp), it
    for it in (7, 9):
        x, y = schedule.batch(loader, it)
        xp, yp = loader.batch(it)
        assert not (torch.equal(x, xp) and torch.equal(y, yp)), it


def test_windows_follow_the_run_and_batches_its_schedule_position():
    """After a pre-training, run iteration t draws the loader's batch of schedule step P + t; a
    deficit window stays on the run's own iterations."""
    loader, schedule = _loader(), _schedule("vertical-flip:0it-5it")
    flipped, plain = schedule.batch(loader, 2, position=12), schedule.batch(loader, 6, position=16)
    assert torch.equal(flipped[0], loader.batch(12)[0].flip(-2)) and torch.equal(flipped[1], loader.batch(12)[1])
    assert all(torch.equal(a, b) for a, b in zip(plain, loader.batch(16)))


def test_phases_combine():
    loader = _loader()
    x, y = _schedule("vertical-flip", "label-permutation(seed=3)", "no-augmentation").batch(loader, 1)
    images, labels = _data()
    idx = loader.indices(1)
    perm = _schedule("label-permutation(seed=3)").batch(loader, 1)[1]
    assert torch.equal(x, loader.normalize(images[idx].flip(-2))) and torch.equal(y, perm)


def test_parsing_and_its_errors():
    assert P.parse("blur:0ep-40ep", 391) == P.Phase("blur", 0, 40 * 391, {"size": 8})
    assert P.parse("blur(size=4):100it-2ep", 391) == P.Phase("blur", 100, 782, {"size": 4})
    assert P.parse("noise:5ep-", 391).end is None and P.parse("rotation", 391).start == 0
    assert P.parse("subset(fraction=0.5,seed=3):0ep-10ep", 391).seed == 3
    assert [p.kind for p in P.parse_list("blur(size=4):0ep-1ep,no-weight-decay:0ep-20ep", 391)] == [
        "blur", "no-weight-decay"]
    phase = P.parse("subset(fraction=0.25,seed=2):1ep-", 391)
    assert P.parse(str(phase), 391) == phase  # the canonical spelling parses back
    for text in ["blurr:0ep-1ep", "blur(sise=3)", "blur:2ep-1ep", "blur:x-1ep", "blur(size=1.5)",
                 "subset(fraction=2)", "blur:0ep", "vertical-flip(seed=1)", "blur(size)"]:
        with pytest.raises(UserError, match=re.escape(f"bad phase {text!r}") + ".*KIND one of blur,") as e:
            P.parse(text, 391)
        assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="overlap"):
        P.PhaseSchedule(P.parse_list("blur:0ep-2ep,blur(size=4):1ep-", 391))


def test_schedule_plugs_into_the_train_step():
    from rewind import models
    from rewind.train import loop
    from rewind.train.schedule import Plan

    loader = _loader(n=64)
    schedule = _schedule("rotation", "no-weight-decay:0it-1it")
    model = models.build("resnet8", width=4, num_classes=schedule.num_outputs())
    plan = Plan(iterations_per_epoch=1, total=2, lr=0.01, milestones=(), gamma=0.1, epoch_decay=1.0, warmup=0,
                weight_decay=1e-4,
                eval_steps=frozenset(), log_steps=frozenset(), save_steps=frozenset())
    state = loop.TrainState(model, torch.optim.SGD(model.parameters(), lr=0.01), loader, plan, phases=schedule)
    assert state.weight_decay(0) == 0.0 and state.weight_decay(1) == 1e-4
    loss, correct, count = loop.train_step(state, 0)
    assert count == 64 and torch.isfinite(loss)
