"""A small probe that lives outside the package, to show (and test) that a probe is its subpackage plus one
registry line: it then appears in the CLI, the demo, the report and the verdict table without editing them.

It measures the mean next-token entropy of both models on a few texts (post-training usually lowers it)."""

from posttrain_probe.probes.base import Probe

PROBE = Probe(
    name="example",
    analysis="example_entropy",
    title="Example: next-token entropy",
    question="Is the post-trained model more confident than its base on plain text?",
    explanation="Mean next-token entropy of each model on the same texts.",
    figures="tests.example_probe.figures",
    verdicts="tests.example_probe.verdicts:verdicts",
    command="example-entropy",
    help="mean next-token entropy of base and post (an example probe)",
    config="tests.example_probe.config:ExampleConfig",
    data="tests.example_probe.config:ExampleData",
    load_inputs="tests.example_probe.run:load_inputs",
    run="tests.example_probe.run:run",
    summarize="tests.example_probe.run:format_summary",
    workload={"smoke": {"n_texts": 4}, "quick": {"n_texts": 8}, "toy": {"n_texts": 16}, "real": {"n_texts": 32}},
)
