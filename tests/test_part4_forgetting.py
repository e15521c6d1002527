"""Chapter 08's headline protocol at a small size, with seeds the chapter does not use (100+).

Directions checked: within a family of shifts, the larger shift forgets more (every seed) and
gives a larger bracket at θ_A (on average over families and seeds); pooled over the runs,
‖∇L_B(θ_A)‖ ranks forgetting at least about as well as the bracket norm (the chapter finds it
clearly better), and given ‖∇L_B(θ_A)‖ and L_B(θ_A) the bracket is not positively associated with
forgetting (the chapter finds a negative partial rank correlation). The chapter's second network, the
1-D CNN, is checked the same way on seeds 110-117, with t intervals over seeds where the chapter's
Holm-corrected CNN intervals exclude 0.
"""

import torch

import ibea_lib as ib
from ibea_lib.book import forgetting as fg
from ibea_lib.book import stats


def test_shift_size_bracket_and_forgetting_directions():
    torch.set_num_threads(1)
    data = ib.data.mnist1d()
    runs = []
    for seed in (100, 101, 102):
        net = ib.models.mlp([40, 16, 10], "tanh", seed=seed)
        loss_a, _ = fg.classification_losses(net, data)
        theta_a, _ = fg.train_phase(net, ib.params_of(net), loss_a, 0.5, 300, progress=False)
        before = fg.evaluate_task(net, theta_a, data)
        for kind, knobs in [("permute", (0.25, 1.0)), ("labels", (2, 10)), ("roll", (2, 20))]:
            rows = []
            for knob in knobs:
                if kind == "roll":
                    task_b = data.map_inputs(lambda x, s=knob: torch.roll(x, s, dims=-1))
                elif kind == "permute":
                    perm = ib.data.pixel_permutation(knob, 1000 + seed, n_pixels=40)
                    task_b = data.map_inputs(lambda x, perm=perm: ib.data.permute_pixels(x, perm))
                else:
                    chosen = torch.randperm(10, generator=torch.Generator().manual_seed(1000 + seed))[:knob]
                    remap = torch.arange(10)
                    remap[chosen] = chosen.roll(1)
                    task_b = data.map_labels(lambda y, remap=remap: remap[y])
                loss_b, _ = fg.classification_losses(net, task_b)
                start = fg.start_measures(loss_a, loss_b, theta_a, 0.5)
                theta_b, _ = fg.train_phase(net, theta_a, loss_b, 0.5, 100, progress=False)
                forgot = fg.forgetting(before, fg.evaluate_task(net, theta_b, data))["loss_increase"]
                rows.append({**start, "forgot": forgot})
            small, large = rows
            assert large["forgot"] > small["forgot"], (seed, kind)
            runs += rows
    # larger shifts give larger brackets on average (per seed the bracket is noisier than forgetting)
    assert sum(r["bracket_norm"] for r in runs[1::2]) > sum(r["bracket_norm"] for r in runs[0::2])
    forgot = [r["forgot"] for r in runs]
    rho_grad = stats.spearman([r["grad_norm_b"] for r in runs], forgot)
    rho_bracket = stats.spearman([r["bracket_norm"] for r in runs], forgot)
    assert rho_grad > 0 and rho_grad >= rho_bracket - 0.1
    partial = stats.partial_correlation(
        [r["bracket_norm"] for r in runs],
        forgot,
        [[r["grad_norm_b"] for r in runs], [r["loss_b"] for r in runs]],
    )
    assert partial < 0.2, partial


def _shifted(data, kind, knob, seed):
    """Chapter 08's shifts of MNIST-1D (seeded where random)."""
    gen = torch.Generator().manual_seed(1000 + seed)
    if kind == "roll":
        return data.map_inputs(lambda x: torch.roll(x, int(knob), dims=-1))
    if kind == "noise":
        noise_tr = torch.randn(data.x_train.shape, generator=gen)
        noise_te = torch.randn(data.x_test.shape, generator=gen)
        return ib.data.Split(
            data.x_train + knob * noise_tr, data.y_train, data.x_test + knob * noise_te, data.y_test
        )
    if kind == "permute":
        perm = ib.data.pixel_permutation(knob, 1000 + seed, n_pixels=40)
        return data.map_inputs(lambda x: ib.data.permute_pixels(x, perm))
    chosen = torch.randperm(10, generator=gen)[: int(knob)]
    remap = torch.arange(10)
    remap[chosen] = chosen.roll(1)
    return data.map_labels(lambda y: remap[y])


def test_cnn_headline_on_held_out_seeds():
    """Chapter 08's second network (the 1-D CNN) at a small size, seeds 110-117 (no chapter uses them).

    Four families with three knob values each (12 shifted runs per seed), phases of 400 and 60 steps on
    1,000 signals. Computed, as in the chapter, within each seed, with a t interval over the 8 seeds:
    larger shifts give larger brackets and more forgetting (mean over families), the bracket ranks
    forgetting positively, and L_B(θ_A) ranks it better than the bracket (intervals above 0, as the
    chapter's Holm-corrected CNN intervals); ‖∇L_B(θ_A)‖ ranks it better than the bracket (direction
    only: the chapter's smallest CNN effect, which at this size the 8 seeds do not resolve, +0.09
    [−0.01, +0.19] on these seeds); given ‖∇L_B‖ and L_B the bracket is not positively associated with
    forgetting (interval not above 0; the chapter's CNN interval covers 0).
    """
    from ibea_lib.book.experiments import cnn1d

    torch.set_num_threads(1)
    data = ib.data.mnist1d(num_samples=1000)
    families = {
        "roll": (2, 10, 20),
        "noise": (0.5, 1.0, 4.0),
        "permute": (0.25, 0.5, 1.0),
        "labels": (2, 6, 10),
    }
    stat = {
        k: []
        for k in ("knob_bracket", "knob_forgetting", "rho_bracket", "grad_minus", "loss_minus", "partial")
    }
    for seed in range(110, 118):
        net = cnn1d(40, 8, seed=seed)
        loss_a, _ = fg.classification_losses(net, data)
        theta_a, _ = fg.train_phase(net, ib.params_of(net), loss_a, 0.5, 400, progress=False)
        before = fg.evaluate_task(net, theta_a, data)
        rows = []
        for kind, knobs in families.items():
            for knob in knobs:
                task_b = _shifted(data, kind, knob, seed)
                loss_b, _ = fg.classification_losses(net, task_b)
                start = fg.start_measures(loss_a, loss_b, theta_a, 0.5)
                theta_b, _ = fg.train_phase(net, theta_a, loss_b, 0.5, 60, progress=False)
                forgot = fg.forgetting(before, fg.evaluate_task(net, theta_b, data))["loss_increase"]
                rows.append({**start, "kind": kind, "knob": knob, "forgot": forgot})
        col = {k: torch.tensor([r[k] for r in rows], dtype=torch.float64) for k in rows[0] if k != "kind"}
        fams = [torch.tensor([r["kind"] == kind for r in rows]) for kind in families]
        y = col["forgot"]
        rho = {m: stats.spearman(col[m], y) for m in ("bracket_norm", "grad_norm_b", "loss_b")}
        stat["knob_bracket"].append(
            sum(stats.spearman(col["knob"][f], col["bracket_norm"][f]) for f in fams) / 4
        )
        stat["knob_forgetting"].append(sum(stats.spearman(col["knob"][f], y[f]) for f in fams) / 4)
        stat["rho_bracket"].append(rho["bracket_norm"])
        stat["grad_minus"].append(rho["grad_norm_b"] - rho["bracket_norm"])
        stat["loss_minus"].append(rho["loss_b"] - rho["bracket_norm"])
        stat["partial"].append(
            stats.partial_correlation(col["bracket_norm"], y, [col["grad_norm_b"], col["loss_b"]])
        )
    iv = {k: stats.t_interval(v) for k, v in stat.items()}
    for key in ("knob_bracket", "knob_forgetting", "rho_bracket", "loss_minus"):
        assert iv[key]["lo"] > 0, (key, iv[key])
    # the smallest of the chapter's CNN effects (+0.08 there): at this size only its direction is checked
    assert iv["grad_minus"]["mean"] > 0, iv["grad_minus"]
    assert iv["partial"]["lo"] < 0, iv["partial"]
