"""The original brain-tuning code's analyses of brain-tuned speech models: statistics (``stats``), low-level
residual alignment (``residual``), layer-wise probes (``probes``), the semantic–auditory region contrast
(``region_contrast``) and
their tuned-vs-untuned comparisons (``compare``). ``jobs.analyze.run`` runs them all on the encoding
pipeline of ``braintune_dist.evaluate``."""
