"""python -m braintune_dist.data.simulate --out DIR [...]"""
import sys

from braintune_dist.data.simulate.dataset import main

sys.exit(main())
