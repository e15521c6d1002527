"""Chapter 08's headline protocol at a small size, with seeds the chapter does not use (100+).

Directions checked: within a family of shifts, the larger shift forgets more (every seed) and
gives a larger bracket at θ_A (on average over families and seeds); pooled over the runs,
‖∇L_B(θ_A)‖ ranks forgetting at least about as well as the bracket norm (the chapter finds it
clearly better), and given ‖∇L_B(θ_A)‖ and L_B(θ_A) the bracket is not positively associated with
forgetting (the chapter finds a negative partial rank correlation).
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
