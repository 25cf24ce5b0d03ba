"""experiments/pfa_vs_rest.py: --quick runs end to end with every arm on every model, mean ± std
cells, path alignment, the verdicts (all inconclusive on one seed) and the plots."""

from __future__ import annotations

from experiment_runner import PNG, data_dir, experiment, payload, payload_times, run_script  # noqa: F401 (fixture)

NAME = "pfa_vs_rest"
ARMS = ("bp", "fa", "usf", "kp", "pfa", "pfa-const")
MODELS = ("mlp", "lenet", "plaincnn6")


def test_pfa_vs_rest_has_every_arm_path_alignment_and_verdicts(data_dir, tmp_path):
    results = run_script(NAME, data_dir, tmp_path)
    md = (results / f"{NAME}.md").read_text()
    for model in MODELS:
        assert f"## {model}" in md, model
    for arm in ARMS:
        assert md.count(f"| {arm} |") >= len(MODELS), arm  # the accuracy table of every model
    assert " ± " in md and "Verdict criterion" in md and "∠(B·R, W)" in md and "BP at its plateau" in md
    assert "Training time:" in md
    p = payload(results, NAME)
    assert p["criterion"] and set(p["results"]) == set(MODELS)
    for model in MODELS:
        assert (results / f"{NAME}-{model}.png").read_bytes()[:8] == PNG
        verdicts = p["verdicts"][model]
        assert len(verdicts) == 6
        assert {v["result"] for v in verdicts} == {"inconclusive"}  # one seed in --quick
        arms = p["results"][model]["arms"]
        assert set(arms) == set(ARMS)
        assert arms["pfa"]["walign"] and arms["fa"]["walign"] and arms["kp"]["walign"]
    assert all(t is not None and t > 0 for t in payload_times(results, NAME))

    # a seed that one arm lacks (a diverged run) is left out of every arm of that model, so that
    # the per-seed lists stay paired, and the section says so
    m = experiment("pfa_vs_rest")
    runs = tmp_path / "runs" / f"{NAME}-quick"
    dirs = {"mlp-bp-s0": runs / "mlp-bp-s0", "mlp-bp-s1": runs / "mlp-bp-s0", "mlp-fa-s0": runs / "mlp-fa-s0"}
    s = m.summarise(dirs)["mlp"]
    assert s["seeds"] == [0] and s["seeds_left_out"] == [1]
    assert len(s["arms"]["bp"]["test_acc"]) == len(s["arms"]["fa"]["test_acc"]) == 1
    assert "Seeds 0 only: seed(s) 1 lack a finished run of some arm" in m.markdown({"mlp": s})


def test_the_large_decay_phase_shrinks_as_the_authors_first_epoch():
    """λ₀ over the large-decay phase gives η λ₀ S / (1 − μ) of the authors' first epoch: MNIST
    (lr 0.01, λ₀ 0.03, 938 steps of 64) ≈ 2.81, CIFAR-10 (lr 0.1, λ₀ 0.005, 391 steps) ≈ 1.96;
    on MNIST's 469 steps of 128 at the linearly scaled lr 0.02 that is the authors' λ₀ itself."""
    m = experiment("pfa_vs_rest")
    for n, regime, epochs, steps, authors in ((60000, "mnist", 1, 469, 2.814), (20000, "cifar10", 3, 157, 1.955)):
        lr = m.learning_rate(regime)
        lam = m.first_decay(n, regime)
        assert m.high_epochs(n) == epochs
        assert abs(lr * lam * epochs * steps / (1 - m.MOMENTUM) - authors) < 1e-3
        assert f"optim.decay_schedule=[{', '.join(['1'] * epochs)}, " in " ".join(m.decay("pfa", n, regime))
    assert abs(m.learning_rate("mnist") - 0.02) < 1e-12 and abs(m.first_decay(60000, "mnist") - 0.03) < 2e-4
    assert m.decay(m.CONTROL, 60000, "mnist") == [f"optim.weight_decay={m.LATER_DECAY}"]


def test_a_band_leaves_out_epochs_without_a_test_pass():
    from matplotlib.figure import Figure

    m = experiment("pfa_vs_rest")
    ax = Figure().subplots()
    m._band(ax, [1, 2, 3, 4], [[None, 0.5, None, 0.7], [None, 0.6, None, 0.9]], 100.0, color="C0")
    line = ax.get_lines()[0]
    assert list(line.get_xdata()) == [2, 4] and list(line.get_ydata()) == [55.0, 80.0]
