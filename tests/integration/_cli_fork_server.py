"""A fork server for fault tests: imports torch/transformers/posttrain_probe once, then forks one process per
CLI command (`posttrain_probe.cli.main(argv)`), so a test can SIGKILL real processes without paying ~5-10 s of
imports per process on a 2-core box.

Protocol (one JSON object per line on stdin, one reply line on stdout):
    {"run": [argv...], "log": path, "die": null | {"at": "checkpoint" | "metrics", "nth": n}}  -> {"pid": pid}
    {"poll": pid}  -> {"running": true} | {"exit": code} | {"signal": n}
The "die" option makes the child SIGKILL itself in the middle of its n-th checkpoint write (after the model
weights, before the trainer state) or of its n-th metrics line (after half of the line). The server also
registers the test task "digits" (a dense reward: the share of digit tokens in the completion).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any


def digit_share(completion: str, problem: Any) -> float:
    toks = completion.split()
    return sum(t.isdigit() for t in toks) / max(len(toks), 1)


def _die_now() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install_die(at: str, nth: int) -> None:
    from posttrain_probe.rlvr import checkpoint, trainer

    calls = {"n": 0}
    if at == "checkpoint":
        real_save = checkpoint.save_file

        def save_file(tensors, filename, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == nth:
                _die_now()  # model.safetensors is written into the temp folder; trainer state is not
            return real_save(tensors, filename, *args, **kwargs)

        checkpoint.save_file = save_file
    elif at == "metrics":
        real_append = trainer._append_jsonl

        def append(path, row):
            if path.name == trainer.METRICS_FILE:
                calls["n"] += 1
                if calls["n"] == nth:
                    line = json.dumps(row, allow_nan=True) + "\n"
                    with open(path, "a", encoding="utf-8") as f:
                        f.write(line[: len(line) // 2])
                    _die_now()
            return real_append(path, row)

        trainer._append_jsonl = append
    else:
        raise ValueError(f"unknown die point {at!r}")


def _child(req: dict[str, Any]) -> None:
    fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    code = 1
    try:
        if req.get("die"):
            _install_die(req["die"]["at"], int(req["die"]["nth"]))
        from posttrain_probe.cli import main

        code = main(req["run"])
    except BaseException as e:  # noqa: BLE001 - report anything, then leave without running the server's code
        print(f"child failed: {type(e).__name__}: {e}", file=sys.stderr)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    import torch
    import transformers  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    import posttrain_probe.cli
    import posttrain_probe.data  # noqa: F401
    import posttrain_probe.rlvr.trainer  # noqa: F401
    from posttrain_probe.rlvr import tasks

    torch.set_num_threads(1)
    tasks.TASKS["digits"] = tasks.Task("digits", digit_share, None)
    posttrain_probe.cli.build_parser()  # imports the probe plugins once
    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        if "run" in req:
            pid = os.fork()
            if pid == 0:
                _child(req)
            reply: dict[str, Any] = {"pid": pid}
        elif "poll" in req:
            done, status = os.waitpid(int(req["poll"]), os.WNOHANG)
            if done == 0:
                reply = {"running": True}
            elif os.WIFSIGNALED(status):
                reply = {"signal": os.WTERMSIG(status)}
            else:
                reply = {"exit": os.WEXITSTATUS(status)}
        else:
            reply = {"error": f"unknown request {req!r}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    serve()
