"""Fine-tuning and training ResShift models on a user's images: ``python -m training.finetune``.

Data reading and degradations, the training stages and loop, checkpoints, metrics, logs and export live here.
"""
