"""Parity checks between a base and a post-trained model: same tokenizer ids, same shapes.

A post-trained tokenizer may *add* tokens (chat specials) as long as every shared token keeps its id;
the added tokens are reported. A different end-of-sequence or padding token is common for chat models
(e.g. an end-of-turn token) and is reported as a note, not an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_PROBE_TEXT = "The city of Paris is in France. 12 + 30 = 42.\nUser: How do I bake bread?\nAssistant:"


class PairMismatchError(ValueError):
    """Base and post models cannot be compared token for token."""


@dataclass
class ParityReport:
    ok: bool
    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    added_tokens: list[str] = field(default_factory=list)
    shared_vocab_size: int = 0
    shapes: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "differences": self.differences,
            "notes": self.notes,
            "added_tokens": self.added_tokens,
            "shared_vocab_size": self.shared_vocab_size,
            "shapes": self.shapes,
        }

    def format(self) -> str:
        lines = [f"parity: {'OK' if self.ok else 'MISMATCH'}"]
        for k, (a, b) in self.shapes.items():
            lines.append(f"  {k:<12} base={a}  post={b}{'' if a == b else '   <-- differs'}")
        lines.append(f"  shared vocabulary: {self.shared_vocab_size} tokens")
        if self.added_tokens:
            shown = ", ".join(self.added_tokens[:10]) + (" ..." if len(self.added_tokens) > 10 else "")
            lines.append(f"  tokens added by post: {len(self.added_tokens)} ({shown})")
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  DIFFERENCE: {d}" for d in self.differences]
        return "\n".join(lines)

    def error(self) -> PairMismatchError:
        return PairMismatchError("base and post models differ: " + "; ".join(self.differences))


def check_parity(base, post, probe_text: str = DEFAULT_PROBE_TEXT) -> ParityReport:
    """Compare two `HookedModel`s (or anything with .tokenizer and .arch)."""
    diffs: list[str] = []
    notes: list[str] = []
    shapes = {}
    for key in ("model_type", "n_layers", "d_model", "d_mlp", "n_heads"):
        a, b = getattr(base.arch, key), getattr(post.arch, key)
        shapes[key] = (a, b)
        if a != b:
            diffs.append(f"{key} (base {a}, post {b})")
    vb, vp = base.tokenizer.get_vocab(), post.tokenizer.get_vocab()
    missing = [t for t in vb if t not in vp]
    moved = [t for t in vb if t in vp and vp[t] != vb[t]]
    added = sorted((t for t in vp if t not in vb), key=lambda t: vp[t])
    if missing:
        diffs.append(f"vocabulary: {len(missing)} base tokens missing from post (e.g. {missing[:3]})")
    if moved:
        diffs.append(f"vocabulary: {len(moved)} tokens have different ids (e.g. {moved[:3]})")
    if added and min(vp[t] for t in added) < len(vb):
        diffs.append("vocabulary: post adds tokens inside the base id range; ids are not shared")
    rows_b, rows_p = base.arch.vocab_size, post.arch.vocab_size
    shapes["vocab_size"] = (rows_b, rows_p)
    if rows_b != rows_p and not added:
        diffs.append(f"vocab_size (base {rows_b}, post {rows_p})")
    for name in ("bos_token_id", "unk_token_id"):
        a, b = getattr(base.tokenizer, name, None), getattr(post.tokenizer, name, None)
        if a != b and a is not None:
            diffs.append(f"special token {name} (base {a}, post {b})")
    for name in ("eos_token_id", "pad_token_id"):
        a, b = getattr(base.tokenizer, name, None), getattr(post.tokenizer, name, None)
        if a != b:
            notes.append(f"{name} differs (base {a}, post {b}); both models still read identical ids")
    if not missing and not moved:
        ib = base.tokenizer(probe_text, add_special_tokens=True)["input_ids"]
        ip = post.tokenizer(probe_text, add_special_tokens=True)["input_ids"]
        if ib != ip:
            diffs.append("token ids of the probe text differ between the tokenizers")
    return ParityReport(
        ok=not diffs,
        differences=diffs,
        notes=notes,
        added_tokens=added,
        shared_vocab_size=min(rows_b, rows_p),
        shapes=shapes,
    )
