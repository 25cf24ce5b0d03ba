"""Optimizers: decay groups, and Muon for hidden matrices and conv kernels."""

import copy
import io

import pytest
import torch
from torch import nn

import alignlab
from alignlab.optim import (Muon, MuonWithAdamW, as_matrix, build_optimizer, build_schedule, muon_param_groups,
                            muon_split, param_groups)


def cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 8, 3, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 16), nn.ReLU(), nn.Linear(16, 3))


def step(model, opt, n=1):
    for _ in range(n):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(8, 1, 6, 6)), torch.randint(0, 3, (8,))).backward()
        opt.step()


def test_decay_only_on_matrices_and_kernels():
    model = alignlab.convert(cnn(), rule="kp")
    decay, rest = param_groups(model, 0.1)
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in rest["params"])
    assert rest["weight_decay"] == 0.0
    assert any(p is model[3].feedback.B for p in decay["params"])  # KP's B decays with its W


def test_muon_takes_hidden_matrices_and_kernels_as_views_without_copies():
    torch.manual_seed(0)
    model = alignlab.convert(cnn(), rule="kp")
    muon, rest = muon_split(model)
    ids = {id(p) for p in muon}
    assert ids == {id(model[3].weight), id(model[3].feedback.B), id(model[6].weight), id(model[6].feedback.B)}
    assert id(model[0].weight) not in ids and id(model[8].weight) not in ids  # first and last layer: AdamW
    opt = build_optimizer(model, "muon", lr=0.01, weight_decay=0.1)
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(p) for p in muon]  # the parameters themselves
    kernel = model[3].weight
    storage, before = kernel.data_ptr(), kernel.detach().clone()
    step(model, opt)
    assert kernel.shape == (8, 4, 3, 3) and not torch.equal(kernel, before)  # updated in place, shape kept
    assert kernel.data_ptr() == storage
    m = as_matrix(kernel.grad)
    assert m.shape == (8, 36) and m.data_ptr() == kernel.grad.data_ptr()  # the gradient's matrix is a view
    assert opt.state[kernel]["momentum_buffer"].shape == (8, 36)


@pytest.mark.parametrize("shape, nesterov, adjust", [((6, 9), True, "match_rms_adamw"), ((9, 4), False, None)])
def test_our_muon_in_bfloat16_is_torch_muon_bit_for_bit(shape, nesterov, adjust):
    """Only the Newton-Schulz dtype is ours to choose: with bfloat16, every step equals torch's."""
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(*shape))
    b = torch.nn.Parameter(a.detach().clone())
    kw = dict(lr=0.02, weight_decay=0.1, nesterov=nesterov, adjust_lr_fn=adjust)
    ours, theirs = Muon([a], ns_dtype=torch.bfloat16, **kw), torch.optim.Muon([b], **kw)
    for _ in range(3):
        g = torch.randn(*shape)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
        assert torch.equal(a, b)
    assert torch.equal(ours.state[a]["momentum_buffer"], theirs.state[b]["momentum_buffer"])


def test_our_muon_on_cpu_orthogonalises_in_float32_close_to_torch():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.zeros(16, 24))
    b = torch.nn.Parameter(torch.zeros(16, 24))
    ours, theirs = Muon([a], lr=0.1, weight_decay=0.0), torch.optim.Muon([b], lr=0.1, weight_decay=0.0)
    a.grad = torch.randn(16, 24)
    b.grad = a.grad.clone()
    ours.step()
    theirs.step()
    assert not torch.equal(a, b)  # a different dtype ...
    torch.testing.assert_close(a, b, atol=0.04 * b.abs().max().item(), rtol=0)  # ... the same update (bf16's error)
    s = torch.linalg.svdvals(a.detach()) / 0.1  # update = −lr·NS(g), ratio 1 for 16 × 24
    assert 0.5 < s.min() and s.max() < 1.3  # NS5 leaves the singular values near 1 (about 0.7–1.2)


def test_muon_update_is_orthogonalised():
    torch.manual_seed(0)
    model = alignlab.convert(cnn(), rule="bp")
    opt = build_optimizer(model, "muon", lr=0.01, weight_decay=0.0)
    w = model[6].weight
    before = w.detach().clone()
    x, y = torch.randn(64, 1, 6, 6), torch.randint(0, 3, (64,))
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    g = torch.linalg.svdvals(w.grad)
    opt.step()
    s = torch.linalg.svdvals(w.detach() - before)
    s, g = s[s > 1e-6 * s.max()], g[g > 1e-6 * g.max()]  # a dead unit leaves a zero row in both
    # Newton-Schulz pushes the singular values of the update towards one value; the raw
    # gradient's are spread far wider
    assert s.max() / s.min() < 2.5 < g.max() / g.min()


def test_kp_b_gets_w_update_under_muon_with_adamw():
    torch.manual_seed(0)
    model = alignlab.convert(cnn(), rule="kp")
    opt = build_optimizer(model, "muon", lr=0.01, weight_decay=0.5)
    for layer in (model[3], model[8]):  # a Muon layer and an AdamW layer
        gap = (layer.weight - layer.feedback.B).detach().clone()
        step(model, opt)
        ratio = (layer.weight - layer.feedback.B).detach() / gap
        assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), atol=1e-4)  # W − B only shrinks
        assert 0 < ratio.flatten()[0] < 1


def test_schedule_and_state_dict_reach_both_optimizers():
    model = alignlab.convert(cnn(), rule="fa")
    opt = build_optimizer(model, "muon", lr=0.01)
    sched = build_schedule(opt, "cosine", total_steps=4)
    step(model, opt)
    sched.step()
    want = 0.01 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi / 4)).item())
    assert len(opt.param_groups) == 3 and all(g["lr"] == pytest.approx(want) for g in opt.param_groups)
    again = build_optimizer(model, "muon", lr=0.01)
    again.load_state_dict(opt.state_dict())
    assert again.state_dict()["state"].keys() == opt.state_dict()["state"].keys()
    assert [g["lr"] for g in again.param_groups] == [g["lr"] for g in opt.param_groups]


def test_every_optimizer_trains_a_feedback_net():
    for name in ("sgd", "adam", "adamw", "muon"):
        torch.manual_seed(0)
        model = alignlab.convert(cnn(), rule="fa")
        opt = build_optimizer(model, name, lr=0.01 if name != "sgd" else 0.2)
        x, y = torch.randn(64, 1, 6, 6), torch.randint(0, 3, (64,))
        first = nn.functional.cross_entropy(model(x), y).item()
        for _ in range(30):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        assert nn.functional.cross_entropy(model(x), y).item() < 0.7 * first, name


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="unknown optimizer 'lion'; choose one of sgd, adam, adamw, muon"):
        build_optimizer(cnn(), "lion", lr=0.1)


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 1, 6, 6, generator=g), torch.randint(0, 3, (8,), generator=g)


def test_muon_with_adamw_is_a_torch_optimizer_and_lambda_lr_drives_it():
    torch.manual_seed(0)
    model = alignlab.convert(cnn(), rule="fa")
    opt = build_optimizer(model, "muon", lr=0.01)
    assert isinstance(opt, torch.optim.Optimizer) and isinstance(Muon([nn.Parameter(torch.ones(2, 2))]), MuonWithAdamW)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 ** t)
    for _ in range(2):
        step(model, opt)
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == [0.0025] * 3
    opt.zero_grad()
    assert all(p.grad is None for g in opt.param_groups for p in g["params"])


def test_closure_is_evaluated_with_gradients_and_its_loss_returned():
    torch.manual_seed(0)
    model = alignlab.convert(cnn(), rule="kp")
    opt = build_optimizer(model, "muon", lr=0.01)
    x, y = batch()
    calls = []

    def closure():
        calls.append(torch.is_grad_enabled())
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    before = model[3].weight.detach().clone()
    loss = opt.step(closure)
    assert calls == [True] and isinstance(loss, torch.Tensor) and loss.requires_grad
    assert not torch.equal(model[3].weight, before)  # the closure's gradients were used


def test_state_dict_round_trip_gives_identical_next_steps():
    torch.manual_seed(0)
    model = alignlab.convert(cnn(), rule="kp")
    opt = build_optimizer(model, "muon", lr=0.01, weight_decay=0.1)
    step(model, opt, n=3)
    twin = copy.deepcopy(model)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)  # as a checkpoint stores it
    fresh = build_optimizer(twin, "muon", lr=0.01, weight_decay=0.1)
    fresh.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    assert fresh.state[twin[3].weight]["momentum_buffer"].shape == (8, 36)
    assert fresh.state[twin[0].weight]["step"] == 3
    for seed in (2, 3):
        x, y = batch(seed)
        for m, o in ((model, opt), (twin, fresh)):
            o.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            o.step()
        for a, b in zip(model.parameters(), twin.parameters()):
            assert torch.equal(a, b)


def test_step_hooks_fire():
    model = alignlab.convert(cnn(), rule="fa")
    opt = build_optimizer(model, "muon", lr=0.01)
    seen = []
    opt.register_step_pre_hook(lambda o, args, kwargs: seen.append(("pre", o is opt)))
    opt.register_step_post_hook(lambda o, args, kwargs: seen.append(("post", o is opt)))
    step(model, opt, n=2)
    assert seen == [("pre", True), ("post", True)] * 2


def test_adamw_groups_equal_torch_adamw_bit_for_bit():
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(5, 7))
    b = nn.Parameter(a.detach().clone())
    ours = MuonWithAdamW([{"params": [a], "use_muon": False}], lr=0.01, weight_decay=0.1)
    theirs = torch.optim.AdamW([b], lr=0.01, weight_decay=0.1, foreach=False)
    for _ in range(4):
        a.grad = torch.randn(5, 7)
        b.grad = a.grad.clone()
        ours.step()
        theirs.step()
        assert torch.equal(a, b)


def test_add_param_group_and_one_line_errors():
    w, v = nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(4))
    opt = MuonWithAdamW([{"params": [w], "use_muon": True}], lr=0.01)
    opt.add_param_group({"params": [v], "use_muon": False, "lr": 0.1})
    assert opt.param_groups[1]["lr"] == 0.1 and opt.param_groups[1]["betas"] == (0.9, 0.999)
    w.grad, v.grad = torch.ones(4, 3), torch.ones(4)
    opt.step()
    assert set(opt.state[w]) == {"momentum_buffer"} and set(opt.state[v]) == {"step", "exp_avg", "exp_avg_sq"}
    with pytest.raises(ValueError, match="needs use_muon=True"):
        MuonWithAdamW([nn.Parameter(torch.randn(2, 2))])
    with pytest.raises(ValueError, match="Muon takes matrices and kernels"):
        opt.add_param_group({"params": [nn.Parameter(torch.randn(3))], "use_muon": True})
    assert len(opt.param_groups) == 2


def test_state_saved_in_the_old_muon_plus_adamw_layout_loads_and_continues_exactly():
    """Before Muon was one optimizer, the state dict was {"muon": torch Muon's, "adamw": torch AdamW's}."""
    torch.manual_seed(0)
    model = alignlab.convert(cnn(), rule="kp")
    twin = copy.deepcopy(model)
    muon, rest = muon_split(model)
    views = [(p, p.detach().view(p.shape[0], -1)) for p in muon]
    old_muon = torch.optim.Muon([v for _, v in views], lr=0.01, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    old_adamw = torch.optim.AdamW([{"params": [p for p in rest if p.dim() >= 2], "weight_decay": 0.1},
                                   {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}], lr=0.01)
    ours = MuonWithAdamW(muon_param_groups(twin, 0.1), lr=0.01, adjust_lr_fn="match_rms_adamw", ns_dtype=torch.bfloat16)

    def old_step(x, y):
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        for p, v in views:
            v.grad = p.grad.view_as(v)
        old_muon.step()
        old_adamw.step()

    for seed in (1, 2):
        old_step(*batch(seed))
    twin.load_state_dict(model.state_dict())
    saved = io.BytesIO()
    torch.save({"muon": old_muon.state_dict(), "adamw": old_adamw.state_dict()}, saved)  # the old checkpoint
    ours.load_state_dict(torch.load(io.BytesIO(saved.getvalue()), weights_only=True))
    x, y = batch(3)
    old_step(x, y)
    ours.zero_grad()
    nn.functional.cross_entropy(twin(x), y).backward()
    ours.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_decay_schedule_multiplies_each_groups_initial_decay_per_epoch():
    from alignlab.optim import decay_multiplier, set_decay

    assert [decay_multiplier([1, 0.02], e) for e in (1, 2, 3, 9)] == [1.0, 0.02, 0.02, 0.02]
    assert decay_multiplier([], 5) == 1.0
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = build_optimizer(net, "adamw", lr=1e-2, weight_decay=0.5)
    before = [g["weight_decay"] for g in opt.param_groups]
    set_decay(opt, 0.02)
    assert [g["weight_decay"] for g in opt.param_groups] == [w * 0.02 for w in before]
    assert sorted(before) == [0.0, 0.5]  # biases stay undecayed
    set_decay(opt, 1.0)  # back to the initial decay, not 0.02 × 0.5
    assert [g["weight_decay"] for g in opt.param_groups] == before
    fresh = build_optimizer(net, "adamw", lr=1e-2, weight_decay=0.5)
    fresh.load_state_dict(opt.state_dict())  # the initial decay travels with the optimizer
    set_decay(fresh, 0.1)
    assert sorted(g["weight_decay"] for g in fresh.param_groups) == [0.0, 0.05]
