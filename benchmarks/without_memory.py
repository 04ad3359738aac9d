"""The network inside an output-memory checkpoint, as a per-frame checkpoint of its own.

A model trained with ``model.output_memory: true`` and ``loss.memory_gradient: false`` trains its network exactly as
its per-frame twin is trained (same data, same updates: ``tests/test_output_memory.py``); only the gate learns from
the blended output. Dropping the memory from such a checkpoint gives that twin at the same step count, so scoring
both checkpoints measures what the memory alone adds, without the seed-to-seed noise of two training runs.

    python benchmarks/without_memory.py OUT/memory/last.pt OUT/memory-off.pt
    vidseg evaluate --checkpoint OUT/memory-off.pt --data ../shared/camvid --split val --out OUT/memory-off-clean.json
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from vidseg.checkpoint import TrainState

PREFIX = "output_memory."


def without_memory(state: TrainState, path: str) -> TrainState:
    """``state`` with its output memory removed: the per-frame network's weights and a config that builds it."""
    if not any(name.startswith(PREFIX) for name in state.model):
        raise SystemExit(f"{path}: the model has no output memory (no '{PREFIX}*' weights)")
    config = copy.deepcopy(state.config or {})
    config.setdefault("model", {})["output_memory"] = False
    config.setdefault("loss", {})["memory_gradient"] = True
    return TrainState(
        model_name=state.model_name,
        num_classes=state.num_classes,
        model={name: value for name, value in state.model.items() if not name.startswith(PREFIX)},
        label_set=state.label_set,
        label_set_spec=state.label_set_spec,
        working_size=state.working_size,
        normalization=state.normalization,
        config=config,
        step=state.step,
        epoch=state.epoch,
        copied_parameters=[name for name in state.copied_parameters if not name.startswith(PREFIX)],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a checkpoint of a model with model.output_memory")
    parser.add_argument("out", help="where to write the per-frame checkpoint (not the input)")
    args = parser.parse_args()
    if Path(args.out).resolve() == Path(args.checkpoint).resolve():
        raise SystemExit(f"{args.out}: the output would overwrite the input checkpoint")
    state = TrainState.load(args.checkpoint)
    network = without_memory(state, args.checkpoint)
    network.build_model(args.out)  # the config and the weights agree before anything is written
    network.save(args.out)
    print(f"{args.out}: {state.model_name} without output memory (step {state.step})")
    if ((state.config or {}).get("loss") or {}).get("memory_gradient", True):
        print("note: this network trained through the memory (loss.memory_gradient true): it is not its per-frame twin")


if __name__ == "__main__":
    main()
