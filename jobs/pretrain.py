"""Pretrain a small random-init speech backbone on phone recognition (stand-in for a pretrained checkpoint).

    python jobs/pretrain.py --config jobs/configs/pretrain/demo.yaml [--steps 400 --out runs/pretrained/x]
"""
import sys

from braintune_dist.pretrain import main

if __name__ == "__main__":
    sys.exit(main())
