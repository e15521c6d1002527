"""Chapter 12's protocols at a small size, with seeds the chapter does not use (100+).

Directions checked: replay with the bracket correction forgets less than no replay; the correction
changes forgetting by less than a few accuracy points against plain alternating replay; for one
step per block the corrected round is closer than the plain round to the average of both orders, and
for blocks of t = 5 it is farther from it and forgets more than plain blocked replay (chapter 12: the
t² term is an extrapolation there).
"""

import torch

import ibea_lib as ib
from ibea_lib.book import ordering as od
from ibea_lib.book import stats


def test_replay_and_correction_directions():
    torch.set_num_threads(1)
    data = ib.data.mnist1d()
    ce = torch.nn.functional.cross_entropy
    diffs_vs_none, diffs_vs_alt, harm_t5 = [], [], []
    for seed in (100, 101, 102):
        perm = ib.data.pixel_permutation(1.0, seed=100 + seed, n_pixels=40)
        data2 = data.map_inputs(lambda x, perm=perm: ib.data.permute_pixels(x, perm))
        model = ib.models.mlp([40, 16, 10], seed=seed)
        loss1 = ib.model_loss(model, ce, data.x_train, data.y_train)
        loss2 = ib.model_loss(model, ce, data2.x_train, data2.y_train)
        idx = od.replay_buffer(data.y_train, 300, seed)  # 30 would be memorized (chapter 12)
        loss_r = ib.model_loss(model, ce, data.x_train[idx], data.y_train[idx])

        def acc(p, model=model):
            with torch.no_grad():
                logits = torch.func.functional_call(model, p, (data.x_test,))
            return ib.book.training.accuracy(logits, data.y_test)

        p1 = ib.params_of(model)
        for _ in range(300):
            p1 = ib.gd_step(loss1, p1, 0.5)
        none = p1
        for _ in range(60):
            none = ib.gd_step(loss2, none, 0.5)
        alt, _ = od.blocked_replay(loss_r, loss2, p1, 0.5, 1, 60)
        corr, _ = od.blocked_replay(loss_r, loss2, p1, 0.5, 1, 60, correct=True)
        diffs_vs_none.append(acc(corr) - acc(none))  # > 0: corrected replay forgets less
        diffs_vs_alt.append(acc(alt) - acc(corr))
        # one round: the correction moves towards the average of both orders
        ab = od.train_in_order([loss_r, loss2], p1, 0.5, 1)
        ba = od.train_in_order([loss2, loss_r], p1, 0.5, 1)
        avg = ib.scale(ib.add(ab, ba), 0.5)
        fixed = ib.add(ab, ib.lie_bracket(loss_r, loss2, p1), alpha=-0.125)
        assert float(ib.norm(ib.sub(fixed, avg))) < float(ib.norm(ib.sub(ab, avg)))
        # blocks of k = 10 steps (t = 5): the correction overshoots the order average and forgets more
        ab = od.train_in_order([loss_r, loss2], p1, 0.5, 10)
        ba = od.train_in_order([loss2, loss_r], p1, 0.5, 10)
        avg = ib.scale(ib.add(ab, ba), 0.5)
        fixed = ib.add(ab, ib.lie_bracket(loss_r, loss2, p1), alpha=-12.5)
        assert float(ib.norm(ib.sub(fixed, avg))) > float(ib.norm(ib.sub(ab, avg)))
        plain, _ = od.blocked_replay(loss_r, loss2, p1, 0.5, 10, 6)
        fixed_run, _ = od.blocked_replay(loss_r, loss2, p1, 0.5, 10, 6, correct=True)
        harm_t5.append(acc(plain) - acc(fixed_run))  # > 0: the corrected run forgets more
    assert all(d > 0 for d in diffs_vs_none)
    assert abs(stats.t_interval(diffs_vs_alt)["mean"]) < 0.03
    assert stats.t_interval(harm_t5)["mean"] > 0
