"""Adapters to external RL trainers. Each submodule imports its trainer only when it is itself imported, so
`import posttrain_probe` never needs one: `posttrain_probe.integrations.verl` (needs verl) puts our STEER,
GRPO, Clip-Cov and KL-Cov losses and entropy metrics into verl's policy-loss registry;
`posttrain_probe.integrations.verl_logs` (no verl needed) turns a verl file log into our metrics.jsonl."""
