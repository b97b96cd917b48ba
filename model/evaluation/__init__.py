"""Evaluating MMV the paper's way on a generated corpus (see docs/training.md).

    python -m model.evaluation CKPT --data CORPUS     # the command (__main__.py)

    evaluate.py           retrieval, linear probes, the untrained floor; `validate`,
                          the trainer's quick retrieval on held-out clips
    eval_sets.py          the decoded windows of a corpus's test clips, sounds and
                          probe-training clips (from the decode cache)
    retrieval_metrics.py  recall at K and median rank
    linear_probe.py       a linear SVM on frozen features
    reports.py            the report's JSON, markdown tables and figure
    errors.py             EvalError, MetricsError

Submodules are imported by name; this package imports nothing itself.
"""
