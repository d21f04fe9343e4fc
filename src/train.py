"""Train one benchmark run: model x dataset x initializer x activation.

Usage:
    python src/train.py                                         # FashionMNIST MLP, defaults
    python src/train.py init=kaiming_normal model=cnn30 dataset=cifar10 activation=relu
    python src/train.py -m init=xavier_uniform,kaiming_normal activation=relu,tanh
    python src/train.py --help                                  # groups, options, fields

Hydra composes conf/train.yaml and initbench.cli hands the resolved values to
initbench.run. The run directory (printed at the end) holds config.yaml, checkpoint.pt,
metrics.jsonl, summary.json and the TensorBoard events; W&B writes under it too.
"""

from initbench.cli.train import main

if __name__ == "__main__":
    main()
