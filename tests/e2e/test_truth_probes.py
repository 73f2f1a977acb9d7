"""The truth probes' batched solve on the trained toy pair: a `truth --lodo all` run's layer and leave-one-dataset-out
accuracies against one scikit-learn fit per model × kind × layer × fold (tests/reference/sklearn_probes.py)."""

from __future__ import annotations

from posttrain_probe.pair import load_pair
from posttrain_probe.probes.truth import TruthConfig, load_truth_statements, run_truth
from posttrain_probe.probes.truth.tables import score_tables
from tests.reference.sklearn_probes import CONVERGED_TOL, accuracy_gaps, sklearn_fit_all, sklearn_lodo_table

ACC_TOL = 0.005 + 1e-12  # issue 17's ±0.005, with float slack


def test_toy_pair_probe_accuracies_equal_the_per_fit_sklearn_path(toy_pair_quick):
    toy = toy_pair_quick
    pair = load_pair(toy.base_dir, toy.post_dir)
    statements = load_truth_statements([toy.data_dir / "statements.csv"])
    cfg = TruthConfig(n_intervene=8, n_shots=2, reach_pairs=0, random_control=False, progress=False, lodo="all")
    res = run_truth(pair, statements, cfg)
    st = res.tables["statements"]
    y, ds, test = st.label.to_numpy(), st.dataset.to_numpy(), (st.split == "test").to_numpy()
    acts = {r: res.tensors[f"activations.{r}"].numpy() for r in ("base", "post")}
    layers = list(range(acts["base"].shape[1]))
    assert len(set(ds)) == 2 and len(res.tables["lodo"]) == 2 * 2 * 2 * len(layers)
    for tol in (None, CONVERGED_TOL):  # the previous path as it was, and run to convergence
        kw = {} if tol is None else {"tol": tol}
        ref = score_tables(acts, y, ds, test, sklearn_fit_all(acts, y, ~test, cfg.C, cfg.max_iter, **kw))
        gaps = accuracy_gaps(res.tables["layer_accuracy"], ref["layer_accuracy"], ["model", "probe", "layer"])
        assert gaps.gap.max() <= ACC_TOL, gaps.sort_values("gap").tail(3)
        ref_lodo = sklearn_lodo_table(acts, y, ds, layers, cfg.C, cfg.max_iter, **kw)
        gaps = accuracy_gaps(res.tables["lodo"], ref_lodo, ["model", "probe", "layer", "held_out"])
        assert gaps.gap.max() <= ACC_TOL, gaps.sort_values("gap").tail(3)
