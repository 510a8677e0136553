"""Give an exported generator population BatchNorm statistics after its run has ended.

The training run's own export does this (``train.precise_bn_batches``); this script is for an
export whose statistics were estimated on too few batches: it recomputes them on the crops that
run's exports use (:func:`upsampler.training.bn.training_crops` with the run's config: seed, batch
size, crop, flips), float32, on whatever machine runs it, writes the generator in place, and
appends one line to the run's ``train.log`` in the run's own wording so that the model card reads
it. Only the BatchNorm moving averages change; every trained weight stays as the run left it.

    python scripts/reexport_batchnorm.py docs/study-gpu/runs/model_b_seed1 \\
        generators/study-gpu/model_b_seed1/generator.keras --data DATA/faces_2600 --step 8200
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="the run's directory (config.json, train.log)")
    parser.add_argument("generator", type=Path, help="the exported generator (.keras), rewritten in place")
    parser.add_argument("--data", type=Path, required=True, help="the processed data folder the run trained on")
    parser.add_argument("--step", type=int, required=True, help="the step the generator was exported at (for the log)")
    parser.add_argument("--batches", type=int, default=None,
                        help="batches of the run's batch size (default: the run's train.precise_bn_batches)")
    args = parser.parse_args(argv)

    from upsampler.archs.srgan import load_generator
    from upsampler.config import Config
    from upsampler.training.bn import recompute_batchnorm_statistics, training_crops
    from upsampler.training.feed import load_training_arrays

    config = Config.from_json(args.run_dir / "config.json")
    d, t = config.data, config.train
    n = args.batches or t.precise_bn_batches
    train_lr, train_hr, _, _ = load_training_arrays(config, args.data)
    crops = training_crops(train_lr, train_hr, n_batches=n, batch_size=t.batch_size, seed=t.seed,
                           flips=d.flips, crop=d.train_crop)
    model = load_generator(args.generator)
    report = recompute_batchnorm_statistics(model, crops)
    model.save(args.generator)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    line = (f"[{stamp}] after the run, on a CPU in float32 (scripts/reexport_batchnorm.py, {len(train_hr)} training "
            f"images of {args.data.name}): re-exported generator at step {args.step} with population BatchNorm "
            f"statistics of {report['layers']} layers over {report['images']} training crops (stored averages were "
            f"off by up to {report['max_variance_ratio']:.2f}x in variance)")
    with (args.run_dir / "train.log").open("a") as log:
        log.write(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
