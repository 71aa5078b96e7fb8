"""What ``evaluate_run`` gives back, and its table as the CLI prints it."""

from __future__ import annotations

from dataclasses import dataclass, field

from capstore.metrics.names import ALL_METRICS


@dataclass
class EvalResult:
    """Corpus values by metric name, the metrics that could not be computed (with why), and whether
    everything came from the store (nothing recomputed)."""

    run_id: int
    name: str  # "method on dataset/split"
    items: int  # captioned items evaluated
    corpus: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    from_store: bool = True
    computed: list[str] = field(default_factory=list)  # metrics (and "candidates") computed by this call
    candidates: int | None = None  # candidates with BLEU-4/CIDEr values; None when not asked
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        how = f"computed now: {', '.join(self.computed)}" if self.computed else "all values from the store"
        lines = [f"run {self.run_id} ({self.name}), {self.items} items: {how}"]
        for metric in ALL_METRICS:
            if metric in self.corpus:
                lines.append(f"  {metric:<13} {self.corpus[metric]:.4f}")
        by_reason: dict[str, list[str]] = {}
        for metric in ALL_METRICS:
            if metric in self.unavailable:
                by_reason.setdefault(self.unavailable[metric], []).append(metric)
        lines.extend(f"  {', '.join(metrics)} unavailable: {reason}" for reason, metrics in by_reason.items())
        if self.candidates is not None:
            lines.append(f"  candidate metrics (Bleu_4, CIDEr): {self.candidates} candidates")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)
