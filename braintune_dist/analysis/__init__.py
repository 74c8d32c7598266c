"""The original brain-tuning code's analyses of brain-tuned speech models: statistics, low-level residual
alignment, layer-wise probes and semantic preference. ``job.run`` (``jobs/analyze.py``) runs them all."""
from braintune_dist.analysis.compare import StatsSettings, compare_models, paired_table
from braintune_dist.analysis.encode import PermutationSettings, VoxelScores, fit_predict, score_layers
from braintune_dist.analysis.preference import PreferenceSettings, plot_preference, preference_table
from braintune_dist.analysis.probes import ProbeResult, ProbeSettings, StimulusWindows, compare_probes, probe_layers
from braintune_dist.analysis.residual import ResidualFeatures, ResidualSettings, residual_source, survival_table
from braintune_dist.analysis.stats import (block_permutation_test, bootstrap_ci, compare_groups, compare_paired, fdr_bh, holm,
                    wilcoxon)

__all__ = ["StatsSettings", "compare_models", "paired_table", "PermutationSettings", "VoxelScores", "fit_predict",
           "score_layers", "PreferenceSettings", "plot_preference", "preference_table", "ProbeResult",
           "ProbeSettings", "StimulusWindows", "compare_probes", "probe_layers", "ResidualFeatures",
           "ResidualSettings", "residual_source", "survival_table", "block_permutation_test", "bootstrap_ci",
           "compare_groups", "compare_paired", "fdr_bh", "holm", "wilcoxon"]
