"""Train several inits and seeds of one network together, as one batched model.

Usage:
    python src/pack.py                          # 17 inits x 3 seeds, FashionMNIST MLP
    python src/pack.py experiment=cifar_cnn30 activation=tanh
    python src/pack.py pack.inits=[kaiming_normal,xavier_normal,zeros] pack.seeds=[0,1]
    python src/pack.py --help                   # groups, options, fields

See initbench.cli.pack. Each member is an ordinary run in its own directory.
"""

from initbench.cli.pack import main

if __name__ == "__main__":
    main()
