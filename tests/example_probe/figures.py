"""The example probe's figure, from the saved result only."""

from __future__ import annotations


def figures(result) -> dict:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.bar(["base", "post"], [result.summary["entropy_base"], result.summary["entropy_post"]])
    ax.set_ylabel("entropy (nats)")
    return {"entropy": fig}


def save_figures(result, out_dir):
    from posttrain_probe.plots import write_figures

    return write_figures(figures(result), out_dir)
