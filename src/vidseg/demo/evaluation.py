"""One model's evaluation as the demo reads it: ``vidseg.results.EvaluationResults`` with the parts the demo
reports (all labelled frames, corruption groups, frames seen) known to be there."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vidseg.errors import VidsegError
from vidseg.results import CorruptionFigures, EvaluationResults, Figures, PerPosition


def as_results(results: EvaluationResults | dict[str, Any], source: str = "results") -> EvaluationResults:
    """``results`` as EvaluationResults: ``evaluate_model``'s return value, or its JSON form (a saved file)."""
    if isinstance(results, EvaluationResults):
        return results
    return EvaluationResults.from_dict(results, source=source)


@dataclass(frozen=True)
class ModelResults:
    """The evaluation of one of the demo's models, every part the report shows present."""

    evaluation: EvaluationResults
    all_frames: Figures
    corruption: CorruptionFigures
    per_position: PerPosition

    @classmethod
    def of(cls, results: EvaluationResults | dict[str, Any], source: str = "results") -> ModelResults:
        """Read ``results`` (see ``as_results``); an evaluation without the demo's parts is an error naming them."""
        evaluation = as_results(results, source)
        if evaluation.all_frames is None or evaluation.corruption is None or evaluation.per_position is None:
            missing = [
                name for name in ("all_frames", "corruption", "per_position") if getattr(evaluation, name) is None
            ]
            raise VidsegError(
                f"{source}: the demo reports an evaluation of every labelled frame of SynthCity sequences, with "
                f"corruption groups and frames seen; these results lack {', '.join(missing)}"
            )
        return cls(evaluation, evaluation.all_frames, evaluation.corruption, evaluation.per_position)

    @property
    def tc(self) -> float | None:
        return self.evaluation.tc

    @property
    def mvc_8(self) -> float | None:
        return self.evaluation.mvc_8

    @property
    def mvc_16(self) -> float | None:
        return self.evaluation.mvc_16
