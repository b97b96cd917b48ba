"""Training MMV: the trainer and everything it runs on (see docs/training.md).

    python -m model.training --config tiny --data DIR --out DIR   # the trainer (train.py)
    python -m model.training.ablation --data CORPUS --out DIR     # the paper's ablation

    train.py          the loop: set-up, steps, validation, checkpoint
    options.py        TrainOptions, the command line, config overrides
    loader.py         the batches of each step (StepBatchSampler), loader processes,
                      filling the decode cache before the first step
    resume.py         the run state saved every few steps; finished-run detection
    clip_dataset.py   ClipItem/ClipDataset: clip files -> training samples
    corpus_dataset.py a generated corpus's split as a ClipDataset
    folder_dataset.py a user's folder of videos (+ transcripts or ASR) as a ClipDataset
    batches.py        collate_batch: samples -> the batch MMVLoss takes
    schedule.py, precision.py, distributed.py, cpu_allocator.py, history.py
                      learning rate, bf16/float32, data parallel, glibc malloc, loss.csv
    ablation.py, ablation_report.py   the ablation runner and its tables and claims
    errors.py         TrainError, DatasetError

Submodules are imported by name (`from model.training.train import train`): this
package imports nothing itself, so `model.training.schedule` does not pull in torch's
data loader, and `model.evaluation` may use the datasets without an import cycle.
"""
